"""`zeroshot {eval,retrieval,compositionality,prompts,report,compare,linear-probe,models} [hydra overrides]` (or `python -m zeroshot ...`);
`zeroshot --help` lists the commands, `zeroshot --version` prints the version and commit.

Hydra has no subcommands, so the first argument picks a row of COMMANDS: the config (configs/<config>.yaml) and
the task function, and the rest of argv goes to Hydra unchanged (-m, --help, overrides all work). Task modules
are imported only when a task runs, so `--help` never loads torch. What happens between argv and the task
(overrides repaired, the config checked once, errors said on one line) is zeroshot/cli.py.
"""
from __future__ import annotations

import os
import sys
from typing import NamedTuple


class Command(NamedTuple):
    config: str | None  # configs/<config>.yaml; None: the function takes argv as it is (no Hydra)
    target: str  # module:function, imported only when the command runs
    data_parallel: bool  # runs data-parallel under torchrun; the others refuse WORLD_SIZE > 1
    summary: str | None  # one sentence for `zeroshot --help`; None: not for direct use


COMMANDS = {
    "eval": Command("eval", "zeroshot.commands.evaluate:evaluate", True,
                    "Evaluate a model on a dataset (zero-shot classification) and write a run directory with its error gallery."),
    "prompts": Command("prompts", "zeroshot.commands.prompts:run_prompts", False,
                       "Compare templates, prompt ensembles and class-specific prompts on cached image features."),
    "report": Command("report", "zeroshot.commands.report:report", False,
                      "Build a benchmark report (HTML, Markdown, CSV) from runs, beside the published numbers."),
    "compare": Command("compare", "zeroshot.commands.compare:compare", False,
                       "Test whether one system beats another on the same images, and show the images only one got right."),
    "linear-probe": Command("linear_probe", "zeroshot.commands.linear_probe:linear_probe", False,
                            "Fit the CLIP paper's logistic-regression probe on cached image features."),
    "retrieval": Command("retrieval", "zeroshot.commands.retrieval:run_retrieval", True,
                         "Evaluate image-text retrieval (Flickr30k, MSCOCO) and write a run directory."),
    "compositionality": Command("compositionality", "zeroshot.commands.compositionality:run_compositionality", True,
                                "Score image-caption selection (SugarCrepe, Winoground, ARO): how words combine, not only which occur."),
    "models": Command(None, "zeroshot.commands.models:print_models", False,
                      "List every model name zeroshot accepts (optionally filtered by a word)."),
    # a suite's jobs (see suite.py), one per task; not for direct use. They compose eval.yaml: a task config's own
    # `override dataset:` default would win over the pair's `override /dataset`, and every job would run one dataset
    "suite-eval": Command("eval", "zeroshot.commands.evaluate:evaluate_pair", True, None),
    "suite-retrieval": Command("eval", "zeroshot.commands.retrieval:retrieval_pair", True, None),
    "suite-compositionality": Command("eval", "zeroshot.commands.compositionality:compositionality_pair", True, None),
}
SUMMARIES = {name: c.summary for name, c in COMMANDS.items() if c.summary}  # the commands a user types
USAGE = ("usage: zeroshot {" + ",".join(SUMMARIES) + "} [overrides...]   "
         "(add --help for a command's options; `zeroshot models` lists what model.name accepts)")
EXAMPLE = "zeroshot eval dataset=imagefolder dataset.root=/path/to/images model.checkpoint=/path/to/ViT-B-32.pt"


def help_text() -> str:
    width = max(map(len, SUMMARIES))
    lines = [USAGE, "", "commands:", *[f"  {c:<{width}}  {s}" for c, s in SUMMARIES.items()], "",
             f"e.g. {EXAMPLE}", "`zeroshot COMMAND --help` lists a command's settings; `zeroshot --version` the version."]
    return "\n".join(lines)


def version_text() -> str:
    """The version and, from a checkout or a package built from one, the commit."""
    from zeroshot import __version__
    from zeroshot.paths import git_commit

    commit = git_commit()
    return f"zeroshot {__version__}" + (f" (commit {commit})" if commit else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}. " if argv and not argv[0].startswith("-") else ""
        print(f"{given}{help_text()}", file=sys.stderr)
        return 2
    name, spec = argv[0], COMMANDS[argv[0]]
    if spec.config is None:  # `zeroshot models`: a table to print, no config
        import importlib

        module, func = spec.target.split(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    from zeroshot.cli import run_command

    return run_command(name, spec, argv[1:])


def console() -> None:
    """The `zeroshot` console script."""
    if "LOCAL_RANK" in os.environ:  # under torchrun: let its error handler report a crashing rank
        from torch.distributed.elastic.multiprocessing.errors import record

        code = record(main)()
    else:
        code = main()
    _exit_quickly()
    sys.exit(code)


def _exit_quickly() -> None:
    """The process ends next: the objects alive now are left out of the garbage collector's passes over the heap
    during interpreter shutdown (gc.freeze), which with torch, pandas and matplotlib loaded take 0.6 s. atexit
    handlers still run and modules are still cleared (releasing what they hold); only reference cycles among
    these objects are left to the end of the process, which returns all its memory at once."""
    import gc

    gc.freeze()


if __name__ == "__main__":
    console()
