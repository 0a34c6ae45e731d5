"""`python -m zeroshot {eval,prompts,report,linear-probe} [hydra overrides]`.

Hydra has no subcommands, so the first argument picks the config (configs/<command>.yaml) and the task
function, and the rest of argv goes to Hydra unchanged (-m, --help, overrides all work).
"""
from __future__ import annotations

import sys

COMMANDS = {
    "eval": ("eval", "zeroshot.evaluate:evaluate"),
    "prompts": ("experiment", "zeroshot.experiments:run_experiments"),
    "report": ("report", "zeroshot.report:build_report"),
    "linear-probe": ("linear_probe", "zeroshot.linear_probe:linear_probe"),
}
USAGE = "usage: python -m zeroshot {" + ",".join(COMMANDS) + "} [overrides...]   (add --help for a command's options)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}. " if argv and not argv[0].startswith("-") else ""
        print(f"{given}{USAGE}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command = argv.pop(0)
    config_name, target = COMMANDS[command]
    if command == "report":  # bare paths are the results directories to collect
        paths = [a for a in argv if "=" not in a and not a.startswith("-")]
        if paths:
            argv = [a for a in argv if a not in paths] + ["inputs=[" + ",".join(paths) + "]"]

    import importlib
    from pathlib import Path

    import hydra

    from . import distributed as dist

    module, func = target.split(":")
    task = getattr(importlib.import_module(module), func)
    config_dir = str(Path(__file__).resolve().parents[1] / "configs")

    from .datasets import BadImageError, DatasetError
    from .pretrained import CheckpointError
    from .prompts import PromptError
    from .report import ReportError

    user_errors = (DatasetError, BadImageError, CheckpointError, PromptError, ReportError, FileNotFoundError)

    @hydra.main(version_base="1.3", config_path=config_dir, config_name=config_name)
    def app(cfg) -> None:
        device = dist.init_from_env(cfg.get("dist_timeout_s", 600)) if command == "eval" else None
        if device is not None:
            cfg.device = str(device)
        try:
            task(cfg)
        except user_errors as e:  # a mistake in the inputs: the message says what and how to fix it
            rank = f"[rank {dist.rank()}] " if dist.initialized() else ""
            print(f"zeroshot {command}: {rank}error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        finally:
            dist.shutdown()

    sys.argv = [f"python -m zeroshot {command}", *argv]
    app()
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
