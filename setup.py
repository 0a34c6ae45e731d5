"""The build step that records the commit a package is built from (zeroshot/_commit.txt), so that an installed
zeroshot (`pip install .`, a wheel) still reports it in `zeroshot --version` and every run's `versions.git_commit`.
Everything else is in pyproject.toml."""
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an sdist): nothing to record
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


class BuildPyWithCommit(build_py):
    def run(self):
        super().run()
        commit = _commit()
        if commit and not self.dry_run:
            target = Path(self.build_lib) / "zeroshot" / "_commit.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(commit + "\n")


setup(cmdclass={"build_py": BuildPyWithCommit})
