"""The command line between argv and a command's function: overrides repaired for Hydra, group choices and
compose errors said on one line, the composed config checked (missing values, undeclared keys, every setting's
range and choices: settings.py) once before any work, and the one dispatch that runs a command (`run_task`).

Mistakes in the inputs print one line that names the problem and the fix, and exit 1; ZEROSHOT_DEBUG=1 shows
the traceback instead. A bug keeps its traceback. Nothing here imports torch until a task runs, so `--help`
never loads it. The table of commands is zeroshot/__main__.py's.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def fail(command: str, message: str) -> int:
    print(f"zeroshot {command}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def required(command: str, key: str) -> int:
    return fail(command, f"{key} is required here and has no value: add {key}=... to the command line "
                         "(e.g. dataset=imagefolder needs dataset.root=DIR)")


def is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _hydra_error(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def check_choices(argv: list[str]) -> str | None:
    """An override `group=option` naming no config in configs/<group>/ is an error that lists the choices.

    Hydra would say so too, over several lines with a pointer to HYDRA_FULL_ERROR; this says it on one."""
    from zeroshot.paths import config_dir

    root = config_dir()
    for arg in argv:
        if not is_override(arg) or arg.startswith(("+", "~")):
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


def _join_split_values(command: str, argv: list[str]) -> list[str]:
    """A value with a space arrives in two pieces when it is not quoted (`dataset.root=/data/my photos`): a bare
    word after an override is no override, so it is joined back on (except for `report`, whose bare words are
    paths)."""
    from zeroshot.log import log

    out: list[str] = []
    for arg in argv:
        if out and command != "report" and not arg.startswith("-") and "=" not in arg and is_override(out[-1]):
            log.info("note: joined %r onto %s (a value with spaces: quote it, %s)", arg, out[-1].split("=")[0],
                     f"\"{out[-1]} {arg}\"")
            out[-1] = f"{out[-1]} {arg}"
        else:
            out.append(arg)
    return out


def read_overrides(command: str, argv: list[str]) -> list[str]:
    """The overrides as Hydra can read them, or a UserError saying how to write them.

    Unquoted values with spaces are joined back (`_join_split_values`). Hydra's grammar has no rule for non-ASCII
    letters or brackets in unquoted values (`/data/café` fails with a LexerNoViableAltException); such a value is
    quoted for Hydra, since a value it cannot parse has only one reading.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from zeroshot.errors import UserError

    out = _join_split_values(command, argv)
    parser = OverridesParser.create()
    for i, arg in enumerate(out):
        if not is_override(arg):
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
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from zeroshot.paths import config_dir

    parser = OverridesParser.create()
    plain = [o for o in overrides if is_override(o) and not parser.parse_override(o).is_sweep_override()]
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
    return _unknown_setting(config_name, key, node)


def _unknown_setting(config_name: str, key: str, node) -> str:
    """`key` is no setting of `node` (its parent in the composed config): the line that says so, with the closest."""
    import difflib

    from zeroshot.paths import config_dir

    parent, _, leaf = key.rpartition(".")
    valid = sorted(node.keys()) if hasattr(node, "keys") else []
    if not parent:  # optional groups (report's suite) are keys only once chosen
        primary = (config_dir() / f"{config_name}.yaml").read_text()
        valid = sorted(set(valid) | {p.name for p in config_dir().iterdir() if p.is_dir() and f" {p.name}:" in primary})
    close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(f'{parent}.{c}' if parent else c) for c in close)}?)" if close else ""
    where = f"under {parent}" if parent else "at the top level"
    return (f"unknown setting {key!r}{hint}. Valid {where}: {', '.join(valid)}; free-form notes go under "
            f"+tags.{leaf}=...")


def prepare_argv(command: str, argv: list[str]) -> list[str]:
    """The overrides as Hydra reads them: bare paths given to report and compare become `inputs=[...]`, -q/--quiet
    is taken out. Raises UserError for an override Hydra cannot read."""
    if command in ("report", "compare"):  # bare paths are the results directories (or runs) to collect
        paths = [a for a in argv if "=" not in a and not a.startswith("-")]
        if paths:
            argv = [a for a in argv if a not in paths] + ["inputs=[" + ",".join(paths) + "]"]
    return read_overrides(command, [a for a in argv if a not in ("-q", "--quiet")])


def check_composed(command: str, config_name: str, cfg) -> None:
    """Before any heavy import: a forgotten value, or a key no YAML declares, fails at once (SystemExit(1))."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from zeroshot.declared import undeclared_problem

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SystemExit(required(command, missing[0]))
    problem = undeclared_problem(cfg, config_name, HydraConfig.get())
    if problem:
        raise SystemExit(fail(command, problem))


@contextmanager
def one_line_errors(command: str):
    """A mistake in the inputs (a UserError, a missing mandatory value) ends the process with one line and exit 1;
    anything else is a bug and keeps its traceback."""
    from omegaconf.errors import MissingMandatoryValue

    from zeroshot.errors import USER_ERRORS

    try:
        yield
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", "") or str(e).split("\n")[0]
        raise SystemExit(required(command, key))
    except USER_ERRORS as e:  # a mistake in the inputs: the message says what and how to fix it
        if os.environ.get("ZEROSHOT_DEBUG"):
            raise
        from zeroshot import distributed as dist

        rank = f"[rank {dist.rank()}] " if dist.initialized() else ""
        raise SystemExit(fail(command, f"{rank}{e}"))


def _draws_in_helper(cfg) -> bool:
    """One run, rank 0 (the rank that writes it), with figures: a multirun's jobs may run in a launcher's worker
    processes, which cannot be relied on to start processes of their own, so they draw in-process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return bool("figures" in cfg and cfg.figures and os.environ.get("RANK", "0") == "0"
                and HydraConfig.get().mode == RunMode.RUN)


# glibc's mallopt parameters (malloc.h) and the values the CLI sets: blocks under 256 MiB come from the heap and
# freed memory stays in the process up to 1 GiB, so a run's same-sized activations reuse the same pages
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 256 << 20, M_TRIM_THRESHOLD: 1 << 30}


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel (the CLI's process only).

    By default glibc serves blocks over a moving threshold (128 KiB to 32 MiB) with mmap and returns freed heap
    above 2x that, so every forward pass of a batch of 64 maps its activations (up to 20 MB each) afresh and
    touches every page again: 12,000-95,000 page faults per ViT-B/32 bf16 forward, measured, which on a VM cost
    up to a tenth of the forward. With fixed thresholds the pages are reused (0 faults per forward). The same
    effect as the jemalloc/tcmalloc preload that PyTorch's CPU tuning guides recommend, without a preload. False
    (nothing changed) where the C library has no mallopt."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without it, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in KEEP_FREED.items())


def run_task(command: str, spec, cfg) -> None:
    """The one dispatch: the composed config checked once (check_composed, then every setting's range and choices:
    settings.check_settings), then the command's function, data-parallel under torchrun where the command is."""
    import importlib

    from zeroshot.settings import check_settings

    check_composed(command, spec.config, cfg)
    with one_line_errors(command):
        check_settings(cfg)

    from zeroshot.figures import drawing

    if _draws_in_helper(cfg):
        drawing.start()  # first: the helper imports matplotlib while this process imports torch and the task
    keep_freed_memory()  # this process and its forked loader workers; the spawned helper keeps glibc's defaults

    from zeroshot import distributed as dist

    module, func = spec.target.split(":")
    try:
        with one_line_errors(command):
            task = getattr(importlib.import_module(module), func)
            device = dist.init_from_env(cfg.dist_timeout_s) if spec.data_parallel else None
            if device is not None:
                cfg.device = str(device)
            task(cfg)
    finally:
        drawing.stop()
        dist.shutdown()


def run_hydra(command: str, spec, argv: list[str]) -> int:
    """Compose spec.config with the overrides through Hydra (runs and -m multiruns alike) and run the task; a
    config that does not compose is said on one line."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from zeroshot.paths import config_dir

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=spec.config)
    def app(cfg) -> None:
        run_task(command, spec, cfg)

    sys.argv = [f"zeroshot {command}", *argv]
    # Hydra then raises what it cannot compose instead of printing it over several lines; the config is composed
    # again only then, to say what is wrong in one line (a dry compose before every run cost 0.17 s)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (HydraException, OmegaConfBaseException):
        problem = None if os.environ.get("ZEROSHOT_DEBUG") else compose_problem(spec.config, argv)
        if problem is None:  # the config composes: the error is a bug, with its traceback
            raise
        return fail(command, problem)
    return 0


def run_command(command: str, spec, argv: list[str]) -> int:
    """`zeroshot COMMAND ARGS...` for a command of the table (zeroshot/__main__.py), as an exit code."""
    from zeroshot.errors import UserError
    from zeroshot.log import setup

    setup("-q" in argv or "--quiet" in argv)
    try:
        argv = prepare_argv(command, argv)
    except UserError as e:
        return fail(command, str(e))
    problem = check_choices(argv)
    if problem:
        return fail(command, problem)
    if not spec.data_parallel and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # these run in one process (prompts and probes work on cached features); N copies would do the work N times
        return fail(command, f"`zeroshot {command}` runs in one process: start it without torchrun (an `eval` under "
                             "torchrun fills the feature cache it then reads)")
    return run_hydra(command, spec, argv)
