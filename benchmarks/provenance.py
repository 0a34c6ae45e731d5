"""Issue 10: what identity costs. Fingerprinting a 50,000-file image folder (stat only, no file read) against
the time the eval of those images takes."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import row, run_eval, save_random_checkpoint, subset_csv


def bench_fingerprint(args):
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset

    n_files = 5_000 if args.quick else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "folder"
        per_class = n_files // 1000
        payload = b"\xff\xd8" + b"\0" * 2048  # the content is never read: the fingerprint stats each file
        for c in range(1000):
            d = root / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                (d / f"{i:05d}.jpg").write_bytes(payload)
        cfg = OmegaConf.create({"name": "imagefolder", "kind": "imagefolder", "root": str(root), "split": "test"})
        t0 = time.perf_counter()
        ds = build_dataset(cfg)
        t_scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        fp = ds.fingerprint()
        t_fp = time.perf_counter() - t0
        assert fp["kind"] == "files" and not fp["files"] and fp["n_images"] == n_files

        # the eval's own rate on real JPEGs (ViT-B/32-sized random weights), to put the fingerprint in proportion
        n_eval = 128 if args.quick else 512
        m = run_eval(subset_csv(n_eval, tmp), save_random_checkpoint(tmp), tmp / "eval", "cache=false")
        per_image = (m["image_encode_seconds"] + m["data_wait_seconds"]) / m["n_images"]  # start-up excluded: conservative
        eval_s = n_files * per_image
        row("ident", f"fingerprint of a {n_files:,}-file image folder", t_fp, None, "-", "s", None,
            f"{100 * t_fp / eval_s:.3f}% of that eval (~{eval_s / 60:.0f} min at the measured {1 / per_image:.1f} img/s, "
            f"ViT-B/32); torchvision's folder scan itself {t_scan:.2f}s; 0 files read")
