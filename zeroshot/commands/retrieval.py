"""`zeroshot retrieval dataset=flickr30k|mscoco`: zero-shot image-text retrieval, recall@1/5/10 both ways.

The image side is classification's: the same checks, model loading, feature cache and torchrun sharding
(each image's "label" is its own index, see retrieval_data). The captions go through `encode_prompts` and the
text cache, split across ranks under torchrun. Only rank 0 scores and writes the run directory, whose
metrics.json records everything a classification run does, with the caption set (hashed) in place of prompts.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from zeroshot import distributed as dist
from zeroshot import suite, trackers
from zeroshot.classifier import encode_prompts
from zeroshot.data.retrieval import build_retrieval_dataset, caption_lists, dataset_language
from zeroshot.metrics.retrieval import retrieve
from zeroshot.pipeline import (
    Setup,
    cache_root,
    caption_tokenizer,
    image_features,
    load_for,
    runtime,
    set_text_language,
    text_cache,
)
from zeroshot.prompts.languages import canonical
from zeroshot.prompts.sets import PromptSet
from zeroshot.record import recorded_config, run_dir_base, run_directory, run_record
from zeroshot.runs import RunRecord


def captions_hash(captions: list[list[str]]) -> str:
    """sha256 of every image's captions, in order: which caption belongs to which image is part of the protocol."""
    return hashlib.sha256(json.dumps({"captions": captions}).encode()).hexdigest()


@dataclass
class RetrievalSetup(Setup):
    captions: list[list[str]] = field(default_factory=list)  # captions[i]: every caption of image i


def prepare(cfg: DictConfig) -> RetrievalSetup:
    """The pipeline's checks and loading (pipeline.runtime, load_for), for a dataset of images and captions."""
    device, precision = runtime(cfg)
    dataset = dist.local_rank_zero_first(lambda: build_retrieval_dataset(cfg.dataset, cfg.skip_bad_images))
    model = load_for(cfg, dataset, device, precision)
    captions = caption_lists(dataset)
    language = None
    if cfg.dataset.get("languages"):  # a multilingual set: the captions' language, as zeroshot records languages
        code = dataset_language(cfg.dataset)
        language = {"language": canonical(code), "dataset_language": code}
        set_text_language(model, language["language"])
    name = f"captions-{language['language']}" if language else "captions"
    pset = PromptSet(name, [], [], f"the captions of {cfg.dataset.name}")
    return RetrievalSetup(model, dataset, pset, [], device, precision, cache_root(cfg), language=language,
                          captions=captions)


def encode_captions(cfg: DictConfig, s: RetrievalSetup, progress: bool) -> torch.Tensor:
    """[T, D] features of every caption, in order (each unique caption encoded once, across ranks)."""
    flat = [c for caps in s.captions for c in caps]
    tok = caption_tokenizer(s.model)
    cache = text_cache(s)
    # build_classifier_sharded splits a list across ranks and all-gathers [D, n] parts in order
    feats = dist.build_classifier_sharded(
        lambda part: encode_prompts(s.model, part, cfg.text_batch_size, progress, cache, tokenize=tok).t(), flat)
    return feats.t().contiguous()


def run_retrieval(cfg: DictConfig) -> dict:
    """Run one retrieval evaluation and write its results directory; returns the metrics dict."""
    start = time.perf_counter()
    trackers.check(cfg)
    s = prepare(cfg)
    progress = cfg.progress and dist.is_main()
    text_feats = encode_captions(cfg, s, progress)
    feats = image_features(cfg, s, progress)
    chash = captions_hash(s.captions)
    identity = None
    if dist.is_main():
        identity = run_record(cfg, s, len(feats.labels), feats.skipped)
        identity.update(prompts=s.prompts.name, prompts_hash=chash, prompts_label=f"{s.prompts.name}#{chash[:8]}")
    with run_directory(run_dir_base(cfg, s, identity) if identity else None) as run:
        if not run.main:
            return {"run_dir": str(run.path)}
        # captions of an image skipped as unreadable have nothing to find: they leave with it (and the run is
        # then not comparable, as run_record says from the skipped count)
        positions = feats.indices.tolist()
        row = {p: r for r, p in enumerate(positions)}
        owner = torch.tensor([i for i, caps in enumerate(s.captions) for _ in caps])
        keep = torch.tensor([int(o) in row for o in owner], dtype=torch.bool)
        text_image = torch.tensor([row[int(o)] for o in owner[keep]], dtype=torch.long)
        ks = tuple(int(k) for k in cfg.dataset.recall_at)
        result = retrieve(feats.features, text_feats[keep], text_image, cfg.get("similarity_block"), s.device, ks)
        recalls, metric = result.recalls(ks), cfg.dataset.metric
        run.record = RunRecord("retrieval", {**recalls, "metric": metric, "main_metric": recalls[metric],
                                             **result.tie_counts()}, identity, {
            "captions_hash": chash, "n_images": len(positions), "n_captions": int(keep.sum()),
            "captions_dropped": int((~keep).sum()),
            "captions_per_image": [int(x) for x in np.unique([len(c) for c in s.captions])],
            "skipped_images": feats.skipped, "images_from_cache": feats.from_cache,
            "image_encode_seconds": feats.compute_s, "data_wait_seconds": feats.data_wait_s, **feats.step.metrics(),
            "wall_seconds": time.perf_counter() - start, "timestamp": run.path.name})
        write_outputs(run.path, cfg, s, positions, owner[keep], result)
    metrics = {**run.record.to_json(), "run_dir": str(run.path)}
    print(f"{metrics['dataset_label']} | {metrics['model']} ({metrics['architecture']}, sha256 "
          f"{metrics['checkpoint_sha256'][:12]}) | {metrics['n_captions']} captions of {metrics['n_images']} images | "
          f"image->text R@1 {100 * recalls['text_retrieval_recall@1']:.2f}%  "
          f"text->image R@1 {100 * recalls['image_retrieval_recall@1']:.2f}%  {metric} {100 * metrics['main_metric']:.2f}% | "
          f"{metrics['wall_seconds']:.1f}s -> {run.path}")
    trackers.log_run(cfg, run.path)  # the run is complete: a tracker that fails now only warns
    return metrics


def write_outputs(run_dir: Path, cfg, s: RetrievalSetup, positions: list[int], owner: torch.Tensor, result) -> None:
    """Per-query ranks and top-5 both ways (for looking at failures) and the config (metrics.json is
    run_directory's, last)."""
    import pandas as pd

    paths = s.dataset.paths
    kept = [c for p in positions for c in s.captions[p]]
    first = np.cumsum([0] + [len(s.captions[p]) for p in positions])[:-1]
    pd.DataFrame({
        "index": positions, "path": [paths[p] for p in positions] if paths else [""] * len(positions),
        "n_captions": [len(s.captions[p]) for p in positions], "rank": result.image_ranks.numpy(),
        "first_caption": first, "top5_captions": [" ".join(map(str, r[:5])) for r in result.image_top.tolist()],
    }).to_csv(run_dir / "image_to_text.csv", index=False)
    pd.DataFrame({
        "caption": np.arange(len(kept)), "image_index": owner.numpy(), "text": kept, "rank": result.text_ranks.numpy(),
        "top5_images": [" ".join(str(positions[i]) for i in r[:5]) for r in result.text_top.tolist()],
    }).to_csv(run_dir / "text_to_image.csv", index=False)
    np.savez_compressed(run_dir / "ranks.npz", image_ranks=result.image_ranks.numpy(), text_ranks=result.text_ranks.numpy(),
                        indices=np.asarray(positions), text_image=owner.numpy())
    # eval's prompts group comes along with its defaults; the captions are this run's text side
    (run_dir / "config.yaml").write_text(recorded_config(cfg, leave_out=("prompts",)))


def retrieval_pair(cfg: DictConfig) -> dict:
    """A suite's retrieval job (`zeroshot suite-retrieval`): a failure is recorded for the report, not raised."""
    return suite.job(run_retrieval, cfg)
