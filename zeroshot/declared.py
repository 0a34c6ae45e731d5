"""What a run records is what it ran: every key of the composed config is one the YAML configs declare.

Hydra lets `+key=value` add any key, so a misspelt `+prompts.weigting=zpe` or an undeclared `+logger=mlflow`
used to run with exit 0, sit in config.yaml and be read by nothing: a reader of that file believes a setting ran.
The declared keys are not a hand-kept list: they are the config composed from the YAML files with the same
group choices and without the `+` overrides, so a key declared in configs/*.yaml (default null where optional)
is valid everywhere it is composed. Free-form notes go under the one declared group `tags` (`+tags.NAME=VALUE`):
recorded in config.yaml, read by nothing, never a setting. See docs/trust.md.
"""
from __future__ import annotations

import difflib

from zeroshot.errors import ConfigError

TAGS = "tags"  # the one group of free-form metadata


def flat_keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a config (mappings recursed into; a list is one key); nothing is resolved."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    out = []
    for key, child in node.items() if isinstance(node, dict) else []:
        out.append(f"{prefix}{key}")
        out.extend(flat_keys(child, f"{prefix}{key}."))
    return out


def undeclared_keys(cfg, declared) -> list[str]:
    """The keys of `cfg` that `declared` lacks, outside `tags.*`; a child of an undeclared key is not listed."""
    known = set(flat_keys(declared))
    found = []
    for key in flat_keys(cfg):
        if key in known or key == TAGS or key.startswith(TAGS + ".") or any(key.startswith(f + ".") for f in found):
            continue
        found.append(key)
    return found


def message(key: str, declared) -> str:
    valid = [k for k in flat_keys(declared) if not k.startswith(TAGS)]
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in valid if k.rpartition(".")[0] == parent}
    close = [siblings[c] for c in difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)]
    close = close or difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown setting {key!r}{hint}: no config declares it, so nothing would read it, yet config.yaml would "
            f"record it. Use a declared key (--help lists them), or put a free-form note under tags: +tags.{leaf}=...")


def added_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.startswith("+")]


def undeclared_problem(cfg, config_name: str, hydra_cfg) -> str | None:
    """check_declared's message, or None: for the CLI, which says it on one line before importing torch."""
    try:
        check_declared(cfg, config_name, hydra_cfg)
    except ConfigError as e:
        return str(e)
    return None


def check_declared(cfg, config_name: str, hydra_cfg) -> None:
    """A ConfigError naming the first key of `cfg` that the YAML configs do not declare (and the closest one that
    they do). Only `+` overrides can add keys (Hydra refuses the rest), so without one nothing is composed.
    `hydra_cfg` (HydraConfig.get()) gives the run's overrides and its config-group choices, kept in the declared
    config so that an option chosen by an appended group (a suite's `+pair` picks model and dataset) declares its keys."""
    overrides, choices = list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices)
    adds = [o for o in added_overrides(overrides) if not o.lstrip("+").startswith(TAGS + ".")]
    if not adds:
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    appended = {o.lstrip("+").partition("=")[0] for o in adds}
    base = [o for o in overrides if not o.startswith("+")]
    base += [f"{g}={c}" for g, c in choices.items() if c is not None and not g.startswith("hydra") and g not in appended
             and "/" not in g]
    if GlobalHydra.instance().is_initialized():  # inside hydra.main
        declared = compose(config_name, overrides=base)
    else:  # a launcher's worker process
        from zeroshot.paths import config_dir

        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            declared = compose(config_name, overrides=base)
    extra = undeclared_keys(cfg, declared)
    if extra:
        raise ConfigError(message(extra[0], declared))
