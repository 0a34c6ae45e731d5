"""Label-free classifiers in a run (`eval`, `zeroshot prompts`, PromptLab): the pipeline's image features, text
cache and settings handed to zeroshot.label_free, and ZPE's correction images read from another split.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from zeroshot.data.readers import build_dataset
from zeroshot.errors import ConfigError
from zeroshot.features.cache import Features
from zeroshot.figures import drawing
from zeroshot.label_free import MIN_IMAGES, LabelFreeRun, LabelFreeSettings, run_label_free, settings_from
from zeroshot.log import log
from zeroshot.pipeline import Setup, image_features, text_cache
def correction_features(cfg: DictConfig, s: Setup, settings: LabelFreeSettings) -> torch.Tensor | None:
    """ZPE's correction images when prompts.zpe_images names another split: its features through the cache."""
    import copy
    import dataclasses

    from omegaconf import open_dict

    split = settings.zpe_images
    if settings.weighting != "zpe" or split in ("test", cfg.dataset.split):
        return None
    from zeroshot import distributed as dist

    if dist.initialized():  # every rank would have to take part in the split's extraction
        raise ConfigError("prompts.zpe_images=SPLIT is not supported under torchrun: run it on one process, or use "
                          "prompts.zpe_images=test")
    split_cfg = copy.deepcopy(cfg)
    with open_dict(split_cfg):
        split_cfg.dataset.split = split
    ds = build_dataset(split_cfg.dataset, s.model.transform, cfg.skip_bad_images)
    feats = image_features(split_cfg, dataclasses.replace(s, dataset=ds), cfg.progress)
    return torch.nn.functional.normalize(feats.features.float(), dim=-1)


def label_free_classifier(cfg: DictConfig, s: Setup, feats: Features) -> LabelFreeRun | None:
    """The label-free classifier prompts.weighting / prompts.subclasses ask for, on these image features (never
    their labels); its identity goes onto the Setup, so the run's prompts hash and label name it."""
    if s.label_free is None:
        return None
    from zeroshot.label_free import normalized, template_features

    feats_t = template_features(s.model, s.classnames, s.prompts.templates, cfg.text_batch_size, text_cache(s))
    run = run_label_free(s.label_free, s.model, normalized(feats.features), feats_t, s.prompts.templates, s.classnames,
                         batch_size=cfg.text_batch_size, text_cache=text_cache(s),
                         correction=correction_features(cfg, s, s.label_free))
    s.label_free_identity = run.identity
    log.info("prompts: %s (label-free; digest %s)", run.label, run.identity["digest"][:8])
    return run


def write_label_free(run_dir, runs: list[LabelFreeRun], templates: list[str], figures: bool, title: str) -> None:
    """prompt_weights.csv: every label-free classifier's weights per template (zpe) or per template and class
    (carprt), and CHiLS's subclass mapping; prompt_weights.png: the weights drawn (torch-free, in the helper)."""
    import pandas as pd

    from zeroshot.figures.prompts import plot_prompt_weights

    rows = [{"row": r.label, **row} for r in runs for row in r.table]
    pd.DataFrame(rows).to_csv(run_dir / "prompt_weights.csv", index=False)
    weighted = [r for r in runs if r.method in ("zpe", "carprt")]
    if figures and weighted:
        panels = []
        for r in weighted:
            if r.method == "zpe":
                panels.append((r.label, [[float(x["weight"])] for x in r.table]))
            else:  # [T, C] as rows of plain floats: no tensor may reach the helper process
                n = len(r.table) // len(templates)
                panels.append((r.label, [[float(x["weight"]) for x in r.table[t * n:(t + 1) * n]] for t in range(len(templates))]))
        classes = list(dict.fromkeys(x["class"] for x in weighted[-1].table)) if weighted[-1].method == "carprt" else []
        drawing.draw(plot_prompt_weights, list(templates), panels, run_dir / "prompt_weights.png", title, classes=classes)


def experiment_runs(cfg: DictConfig, s: Setup, image: torch.Tensor, feats: torch.Tensor) -> list[LabelFreeRun]:
    """`zeroshot prompts`' label-free rows: ZPE and CARPRT (the variants prompts.* set) on a pool of two or more
    templates, and CHiLS with and without reweighting where prompts.subclasses gives a hierarchy."""
    import dataclasses

    base = settings_from(cfg.prompts)
    templates, runs = s.prompts.templates, []
    if len(templates) >= 2 and len(image) >= MIN_IMAGES:
        for method in ("zpe", "carprt"):
            st = dataclasses.replace(base, weighting=method, subclasses=None)
            runs.append(run_label_free(st, s.model, image, feats, templates, s.classnames, batch_size=cfg.text_batch_size,
                                       text_cache=text_cache(s), correction=correction_features(cfg, s, st)))
    else:
        log.info("note: ZPE and CARPRT weight two or more templates over %d or more images; this run has %d and %d",
                 MIN_IMAGES, len(templates), len(image))
    if base.subclasses is not None:
        for reweight in (True, False):
            st = dataclasses.replace(base, weighting="none", chils_reweight=reweight)
            runs.append(run_label_free(st, s.model, image, feats, templates, s.classnames, batch_size=cfg.text_batch_size,
                                       text_cache=text_cache(s)))
    return runs
