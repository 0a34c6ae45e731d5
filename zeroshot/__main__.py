"""`zeroshot {eval,retrieval,prompts,report,linear-probe,models} [hydra overrides]` (or `python -m zeroshot ...`).

Hydra has no subcommands, so the first argument picks the config (configs/<command>.yaml) and the task
function, and the rest of argv goes to Hydra unchanged (-m, --help, overrides all work). Task modules are
imported only when a task runs, so `--help` never loads torch. Mistakes in the inputs print one line that
names the problem and the fix, and exit 1; ZEROSHOT_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

COMMANDS = {
    "eval": ("eval", "zeroshot.evaluate:evaluate"),
    "prompts": ("experiment", "zeroshot.experiments:run_experiments"),
    "report": ("report", "zeroshot.report:build_report"),
    "linear-probe": ("linear_probe", "zeroshot.linear_probe:linear_probe"),
    "retrieval": ("retrieval", "zeroshot.retrieval:run_retrieval"),
    "suite-eval": ("eval", "zeroshot.suite:evaluate_pair"),  # a suite's job (see suite.py); not for direct use
}
DATA_PARALLEL = ("eval", "suite-eval", "retrieval")  # the commands that run data-parallel under torchrun
USAGE = ("usage: zeroshot {" + ",".join([*[c for c in COMMANDS if c != "suite-eval"], "models"]) + "} [overrides...]   "
         "(add --help for a command's options; `zeroshot models` lists what model.name accepts)")


def _fail(command: str, message: str) -> int:
    print(f"zeroshot {command}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def _required(command: str, key: str) -> int:
    return _fail(command, f"{key} is required here and has no value: add {key}=... to the command line "
                          "(e.g. dataset=imagefolder needs dataset.root=DIR)")


def check_choices(argv: list[str]) -> str | None:
    """An override `group=option` naming no config in configs/<group>/ is an error that lists the choices.

    Hydra would say so too, over several lines with a pointer to HYDRA_FULL_ERROR; this says it on one."""
    from .configs import config_dir

    root = config_dir()
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "+", "~")):
            continue
        key, _, value = arg.partition("=")
        group = root / key.replace(".", "/")
        if "." in key or not group.is_dir():
            continue
        choices = sorted(p.stem for p in group.glob("*.yaml"))
        for option in value.split(","):  # a multirun sweep lists several
            option = option.strip()
            if option and option != "null" and option not in choices:
                return f"unknown {key} {option!r}. Choices: {', '.join(choices)}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "models":
        from .catalog import print_models

        return print_models(argv[1:])
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
    problem = check_choices(argv)
    if problem:
        return _fail(command, problem)
    if command not in DATA_PARALLEL and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # these run in one process (prompts and probes work on cached features); N copies would do the work N times
        return _fail(command, f"`zeroshot {command}` runs in one process: start it without torchrun (an `eval` under "
                              "torchrun fills the feature cache it then reads)")

    import hydra

    from .configs import config_dir

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def app(cfg) -> None:
        import importlib

        from omegaconf import OmegaConf
        from omegaconf.errors import MissingMandatoryValue

        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:  # before any heavy import: a forgotten value fails at once
            raise SystemExit(_required(command, missing[0]))

        from . import distributed as dist
        from .errors import USER_ERRORS

        module, func = target.split(":")
        task = getattr(importlib.import_module(module), func)
        try:
            device = dist.init_from_env(cfg.get("dist_timeout_s", 600)) if command in DATA_PARALLEL else None
            if device is not None:
                cfg.device = str(device)
            task(cfg)
        except MissingMandatoryValue as e:
            key = getattr(e, "full_key", "") or str(e).split("\n")[0]
            raise SystemExit(_required(command, key))
        except USER_ERRORS as e:  # a mistake in the inputs: the message says what and how to fix it
            if os.environ.get("ZEROSHOT_DEBUG"):
                raise
            rank = f"[rank {dist.rank()}] " if dist.initialized() else ""
            raise SystemExit(_fail(command, f"{rank}{e}"))
        finally:
            dist.shutdown()

    sys.argv = [f"zeroshot {command}", *argv]
    app()
    return 0


def console() -> None:
    """The `zeroshot` console script."""
    if "LOCAL_RANK" in os.environ:  # under torchrun: let its error handler report a crashing rank
        from torch.distributed.elastic.multiprocessing.errors import record

        sys.exit(record(main)())
    sys.exit(main())


if __name__ == "__main__":
    console()
