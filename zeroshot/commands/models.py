"""`zeroshot models [TEXT]`: everything that can be named as a model, and how each one runs.

Reads only the shipped tables and configs (no torch), so it answers instantly.
"""
from __future__ import annotations

import json
import sys


def rows() -> list[tuple[str, str, str, str]]:
    """(name to give, activation, what runs it, where the weights come from)."""
    import csv

    from zeroshot.models.registry import MODELS, PRETRAINED, family_fields
    from zeroshot.paths import config_dir

    models = json.loads((PRETRAINED.parent / "openclip_models.json").read_text())
    out = [(name, "quick_gelu", "zeroshot", "OpenAI (verified sha256)") for name in MODELS]
    with open(PRETRAINED, newline="") as f:
        for r in csv.DictReader(f):
            arch_cfg = models.get(r["arch"], {})
            beyond = bool(arch_cfg) and family_fields(arch_cfg) is None  # as the loader decides (models/loader.py)
            runner = "open_clip backend" if beyond else (
                "zeroshot (open_clip's tokenizer)" if arch_cfg.get("text_cfg", {}).get("hf_tokenizer_name") else "zeroshot")
            out.append((f"{r['arch']}/{r['tag']}", r["activation"], runner,
                        f"hf-hub:{r['hf_hub'].rstrip('/')}" if r["hf_hub"] else r["url"]))
    for path in sorted((config_dir() / "model").glob("*.yaml")):
        import yaml

        c = yaml.safe_load(path.read_text())
        out.append((f"model={path.stem}", "", c.get("backend") or "zeroshot", f"config for {c['name']}"))
    return out


def print_models(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print("usage: zeroshot models [TEXT]   lists OpenAI's names, open_clip's ARCH/TAG pairs and the model configs "
              "(filtered by TEXT). Also accepted: hf-hub:ORG/REPO[@REVISION], a checkpoint file, or a model folder.")
        return 0
    needle = " ".join(args).lower()
    table = [r for r in rows() if needle in " ".join(r).lower()]
    width = max((len(r[0]) for r in table), default=10)
    runs = max((len(r[2]) for r in table), default=7)
    try:
        print(f"{'name':<{width}}  {'activation':<10}  {'runs on':<{runs}}  weights")
        for name, act, runner, where in table:
            print(f"{name:<{width}}  {act:<10}  {runner:<{runs}}  {where}")
    except BrokenPipeError:  # `zeroshot models | head`
        sys.stderr.close()
        return 0
    print(f"\n{len(table)} entries. Give one as model.name=NAME (or zeroshot.load(NAME)); also hf-hub:ORG/REPO[@REVISION], "
          "model.checkpoint=FILE or model.checkpoint=FOLDER (open_clip or transformers layout).", file=sys.stderr)
    return 0
