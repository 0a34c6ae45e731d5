"""Regenerate zeroshot's tables of open_clip's registry (run when open_clip adds models; outputs are committed).

Reads the installed open_clip_torch package's registry through its public API and writes two data files:
- zeroshot/reference/openclip_models.json: every architecture config in open_clip's model_configs/
  ({name: {"embed_dim", "vision_cfg", "text_cfg", ...}}), so zeroshot can build the CLIP-family ones itself
  and knows which need a reference backend (a timm or HF tower).
- zeroshot/reference/openclip_pretrained.csv: one row per pretrained (architecture, tag) pair with where the
  weights live (hf_hub, url), the activation the weights were trained with, and the preprocessing.

    pip install open_clip_torch && python tools/make_openclip_tables.py
"""
import csv
import json
from pathlib import Path

import open_clip
from open_clip import pretrained

OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference"


def main() -> None:
    models = {name: open_clip.get_model_config(name) for name in open_clip.list_models()}
    (OUT / "openclip_models.json").write_text(json.dumps(models, indent=1, sort_keys=True) + "\n")

    rows = []
    for arch, tag in pretrained.list_pretrained():
        cfg = pretrained.get_pretrained_cfg(arch, tag)
        # open_clip marks QuickGELU weights on the tag (quick_gelu=True) or in the architecture's name/config
        model = models.get(arch) or {}
        quick = cfg.get("quick_gelu", False) or bool(model.get("quick_gelu", False))
        tanh = (model.get("text_cfg", {}).get("act_kwargs") or {}).get("approximate") == "tanh"
        rows.append({
            "arch": arch, "tag": tag, "hf_hub": cfg.get("hf_hub", ""), "url": cfg.get("url", ""),
            "activation": "quick_gelu" if quick else "gelu_tanh" if tanh else "gelu",
            "mean": " ".join(map(str, cfg.get("mean", ()))), "std": " ".join(map(str, cfg.get("std", ()))),
            "interpolation": cfg.get("interpolation", ""), "resize_mode": cfg.get("resize_mode", ""),
        })
    with open(OUT / "openclip_pretrained.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(models)} architectures, {len(rows)} pretrained tags -> {OUT} (open_clip {open_clip.__version__})")


if __name__ == "__main__":
    main()
