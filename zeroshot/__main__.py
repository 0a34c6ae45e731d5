"""`zeroshot {eval,retrieval,compositionality,prompts,report,compare,linear-probe,models} [hydra overrides]` (or `python -m zeroshot ...`);
`zeroshot --help` lists the commands, `zeroshot --version` prints the version and commit.

Hydra has no subcommands, so the first argument picks the config (configs/<command>.yaml) and the task
function, and the rest of argv goes to Hydra unchanged (-m, --help, overrides all work). Task modules are
imported only when a task runs, so `--help` never loads torch. Mistakes in the inputs print one line that
names the problem and the fix, and exit 1; ZEROSHOT_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

COMMANDS = {
    "eval": ("eval", "zeroshot.commands.evaluate:evaluate"),
    "prompts": ("experiment", "zeroshot.commands.prompt_experiments:run_experiments"),
    "report": ("report", "zeroshot.commands.report:report"),
    "compare": ("compare", "zeroshot.commands.compare:compare"),
    "linear-probe": ("linear_probe", "zeroshot.commands.linear_probe:linear_probe"),
    "retrieval": ("retrieval", "zeroshot.commands.retrieval:run_retrieval"),
    "compositionality": ("compositionality", "zeroshot.commands.compositionality:run_compositionality"),
    # a suite's jobs (see suite.py), one per task; not for direct use. They compose eval.yaml: a task config's own
    # `override dataset:` default would win over the pair's `override /dataset`, and every job would run one dataset
    "suite-eval": ("eval", "zeroshot.commands.evaluate:evaluate_pair"),
    "suite-retrieval": ("eval", "zeroshot.commands.retrieval:retrieval_pair"),
    "suite-compositionality": ("eval", "zeroshot.commands.compositionality:compositionality_pair"),
}
DATA_PARALLEL = ("eval", "suite-eval", "retrieval", "suite-retrieval", "compositionality", "suite-compositionality")  # the commands that run data-parallel under torchrun
USAGE = ("usage: zeroshot {" + ",".join([*[c for c in COMMANDS if not c.startswith("suite-")], "models"]) + "} [overrides...]   "
         "(add --help for a command's options; `zeroshot models` lists what model.name accepts)")
# one sentence per command, for `zeroshot --help`
SUMMARIES = {
    "eval": "Evaluate a model on a dataset (zero-shot classification) and write a run directory with its error gallery.",
    "prompts": "Compare templates, prompt ensembles and class-specific prompts on cached image features.",
    "report": "Build a benchmark report (HTML, Markdown, CSV) from runs, beside the published numbers.",
    "compare": "Test whether one system beats another on the same images, and show the images only one got right.",
    "linear-probe": "Fit the CLIP paper's logistic-regression probe on cached image features.",
    "retrieval": "Evaluate image-text retrieval (Flickr30k, MSCOCO) and write a run directory.",
    "compositionality": "Score image-caption selection (SugarCrepe, Winoground, ARO): how words combine, not only which occur.",
    "models": "List every model name zeroshot accepts (optionally filtered by a word).",
}
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


def _fail(command: str, message: str) -> int:
    print(f"zeroshot {command}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def _required(command: str, key: str) -> int:
    return _fail(command, f"{key} is required here and has no value: add {key}=... to the command line "
                          "(e.g. dataset=imagefolder needs dataset.root=DIR)")


def check_choices(argv: list[str]) -> str | None:
    """An override `group=option` naming no config in configs/<group>/ is an error that lists the choices.

    Hydra would say so too, over several lines with a pointer to HYDRA_FULL_ERROR; this says it on one."""
    from zeroshot.paths import config_dir

    root = config_dir()
    for arg in argv:
        if not _is_override(arg) or arg.startswith(("+", "~")):
            continue
        key, _, value = arg.partition("=")
        group = root / key.replace(".", "/")
        if "." in key or not group.is_dir():
            continue
        choices = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))  # _x: a base
        for option in value.split(","):  # a multirun sweep lists several
            option = option.strip()
            if option and option != "null" and option not in choices:
                return f"unknown {key} {option!r}. Choices: {', '.join(choices)}"
    return None


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _hydra_error(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_overrides(command: str, argv: list[str]) -> list[str]:
    """The overrides as Hydra can read them, or a UserError saying how to write them.

    A value with a space arrives in two pieces when it is not quoted (`dataset.root=/data/my photos`): a bare word
    after an override is no override, so it is joined back on (except for `report`, whose bare words are paths).
    Hydra's grammar has no rule for non-ASCII letters or brackets in unquoted values (`/data/café` fails with a
    LexerNoViableAltException); such a value is quoted for Hydra, since a value it cannot parse has only one reading.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from zeroshot.errors import UserError
    from zeroshot.log import log

    out: list[str] = []
    for arg in argv:
        if out and command != "report" and not arg.startswith("-") and "=" not in arg and _is_override(out[-1]):
            log.info("note: joined %r onto %s (a value with spaces: quote it, %s)", arg, out[-1].split("=")[0],
                     f"\"{out[-1]} {arg}\"")
            out[-1] = f"{out[-1]} {arg}"
        else:
            out.append(arg)
    parser = OverridesParser.create()
    for i, arg in enumerate(out):
        if not _is_override(arg):
            continue
        try:
            parser.parse_override(arg)
            continue
        except HydraException as e:
            problem = _hydra_error(e)
        key, _, value = arg.partition("=")
        quoted = f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if value[:1] not in ("'", '"', "[", "{"):
            try:
                parser.parse_override(quoted)
                out[i] = quoted
                continue
            except HydraException:
                pass
        raise UserError(f"the override {arg!r} cannot be read ({problem}): quote the value, e.g. \"{quoted}\"")
    return out


def compose_problem(config_name: str, overrides: list[str]) -> str | None:
    """What is wrong with the config these overrides compose, as one line with 'did you mean' for a misspelt key
    (Hydra's own message is seven lines with a pointer to HYDRA_FULL_ERROR), or None if it composes. Sweeps are
    left out: each of their jobs composes in the multirun."""
    import difflib
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from zeroshot.paths import config_dir

    parser = OverridesParser.create()
    plain = [o for o in overrides if _is_override(o) and not parser.parse_override(o).is_sweep_override()]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            compose(config_name, overrides=plain)
            return None
        except (HydraException, OmegaConfBaseException) as e:
            message = f"{_hydra_error(e)}" + (f" ({_hydra_error(e.__cause__)})" if e.__cause__ else "")
            found = re.search(r"Could not override '([^']+)'", str(e))
            if not found:
                return message
            key = found.group(1)
            parent, _, leaf = key.rpartition(".")
            rest = [o for o in plain if o.split("=")[0].lstrip("+~") != key]
            try:
                node = compose(config_name, overrides=rest)
                node = OmegaConf.select(node, parent) if parent else node
            except (HydraException, OmegaConfBaseException):
                return message
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        if not parent:  # optional groups (report's suite) are keys only once chosen
            primary = (config_dir() / f"{config_name}.yaml").read_text()
            valid = sorted(set(valid) | {p.name for p in config_dir().iterdir() if p.is_dir() and f" {p.name}:" in primary})
        close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(f'{parent}.{c}' if parent else c) for c in close)}?)" if close else ""
        where = f"under {parent}" if parent else "at the top level"
        return (f"unknown setting {key!r}{hint}. Valid {where}: {', '.join(valid)}; free-form notes go under "
                f"+tags.{leaf}=...")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "models":
        from zeroshot.commands.models import print_models

        return print_models(argv[1:])
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
    command = argv.pop(0)
    config_name, target = COMMANDS[command]
    if command in ("report", "compare"):  # bare paths are the results directories (or runs) to collect
        paths = [a for a in argv if "=" not in a and not a.startswith("-")]
        if paths:
            argv = [a for a in argv if a not in paths] + ["inputs=[" + ",".join(paths) + "]"]
    from zeroshot.errors import UserError
    from zeroshot.log import setup

    quiet = "-q" in argv or "--quiet" in argv
    argv = [a for a in argv if a not in ("-q", "--quiet")]
    setup(quiet)
    try:
        argv = read_overrides(command, argv)
    except UserError as e:
        return _fail(command, str(e))
    problem = check_choices(argv)
    if problem:
        return _fail(command, problem)
    if command not in DATA_PARALLEL and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # these run in one process (prompts and probes work on cached features); N copies would do the work N times
        return _fail(command, f"`zeroshot {command}` runs in one process: start it without torchrun (an `eval` under "
                              "torchrun fills the feature cache it then reads)")

    import hydra

    from zeroshot.paths import config_dir

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def app(cfg) -> None:
        import importlib

        from omegaconf import OmegaConf
        from omegaconf.errors import MissingMandatoryValue

        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:  # before any heavy import: a forgotten value fails at once
            raise SystemExit(_required(command, missing[0]))

        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from zeroshot.declared import undeclared_problem

        problem = undeclared_problem(cfg, config_name, HydraConfig.get())  # before any heavy import, as above
        if problem:
            raise SystemExit(_fail(command, problem))

        from zeroshot import drawing

        # one run, rank 0 (the rank that writes it); a multirun's jobs may run in a launcher's worker processes,
        # which cannot be relied on to start processes of their own, so they draw in-process
        if ("figures" in cfg and cfg.figures and os.environ.get("RANK", "0") == "0"
                and HydraConfig.get().mode == RunMode.RUN):
            drawing.start()  # first: the helper imports matplotlib while this process imports torch and the task

        from zeroshot import distributed as dist
        from zeroshot.errors import USER_ERRORS
        from zeroshot.settings import check_settings

        module, func = target.split(":")
        try:
            task = getattr(importlib.import_module(module), func)
            check_settings(cfg)
            device = dist.init_from_env(cfg.dist_timeout_s) if command in DATA_PARALLEL else None
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
            drawing.stop()
            dist.shutdown()

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    sys.argv = [f"zeroshot {command}", *argv]
    # Hydra then raises what it cannot compose instead of printing it over several lines; the config is composed
    # again only then, to say what is wrong in one line (a dry compose before every run cost 0.17 s)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (HydraException, OmegaConfBaseException):
        problem = None if os.environ.get("ZEROSHOT_DEBUG") else compose_problem(config_name, argv)
        if problem is None:  # the config composes: the error is a bug, with its traceback
            raise
        return _fail(command, problem)
    return 0


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
