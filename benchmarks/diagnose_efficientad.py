"""Where EfficientAD's score comes from on the simulated cell: each branch's map scored alone.

EfficientAD's map is the mean of a local (teacher - student) and a global (autoencoder - student) map, each
normalised by its validation quantiles; the image score is the map's max. This captures one scenario of
:mod:`benchmarks.bench_parts` (``--train-parts`` good sheets for training, then new good and defective
sheets), trains EfficientAD with ``cell train``'s code (``--efficientad`` JSON overrides of
configs/detectors/efficientad.yaml) and scores every new view three times: with both branches (the method),
the local branch alone and the global branch alone. Per branch it reports the per-image AUROC (views of
defective sheets that show the defect against good views, as bench_sdu_comparison), the share of those
defective views whose map peaks inside the defect's mask, and the quantiles of good views' scores. With
``--pictures DIR`` it also writes, for the defective views, the view beside its two branch maps (PNG).

Run:  python -m benchmarks.diagnose_efficientad --difficulty hard --efficientad '{"image_size": 128}'
Writes benchmarks/results/diagnose_efficientad.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.bench_parts import score_parts  # noqa: E402
from benchmarks.bench_sdu_comparison import capture_sets  # noqa: E402
from benchmarks.timing import write_json  # noqa: E402

CONFIG = REPO / "configs" / "detectors" / "efficientad.yaml"
BRANCHES = ("both", "local", "global")


def use_branch(detector: Any, branch: str) -> None:
    """Make ``detector`` (a fitted EfficientAD) score with ``branch``'s normalised map alone (or both: the
    method). Same padding, upsampling and max as the method's ``_score_batch``."""
    import torch
    import torch.nn.functional as F

    from detectors.efficientad.losses import normalise_map

    def score_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            local, glob = detector._raw_maps(images)
            q = detector.quantiles
            parts = {"local": normalise_map(local, q[0], q[1]), "global": normalise_map(glob, q[2], q[3])}
            maps = 0.5 * (parts["local"] + parts["global"]) if branch == "both" else parts[branch]
            size = detector.config.image_size
            pad = (size // 4 - maps.shape[-1]) // 2
            maps = F.pad(maps[:, None], (pad, pad, pad, pad), mode="replicate")
            maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            return maps.flatten(1).amax(dim=1), maps

    detector._score_batch = score_batch


def branch_report(store: Any, model: Any, branch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(numbers of one branch, {record id: map} of the defective views that show their defect)."""
    from sklearn.metrics import roc_auc_score

    from detectors.input_prep import to_capture_size

    use_branch(model.detector, branch)
    test = score_parts(store, model, ["good", "defective"])
    labels = {p.part_id: p.label for p in store.parts()}
    masks = store.mask_infos()
    good, bad, peaks_inside, maps = [], [], 0, {}
    for part_id, views in test.items():
        for record, score, amap in views:
            if labels[part_id] == "good":
                good.append(score)
            elif record.id in masks and masks[record.id].area_px > 0:
                bad.append(score)
                mask = store.get_mask(record.id)[0]
                full = to_capture_size(amap, *mask.shape)
                peaks_inside += bool(mask.flat[int(np.argmax(full))])
                maps[record.id] = amap
    scores = np.array(good + bad)
    labels_ = np.array([0] * len(good) + [1] * len(bad))
    return {"auroc": float(roc_auc_score(labels_, scores)), "n_good": len(good), "n_defective": len(bad),
            "defective_peak_inside_mask": peaks_inside / max(1, len(bad)),
            "good_quantiles": np.quantile(good, [0.5, 0.9, 1.0]).round(4).tolist(),
            "defective_quantiles": np.quantile(bad, [0.0, 0.5, 1.0]).round(4).tolist()}, maps


def write_pictures(store: Any, maps: dict[str, dict[str, Any]], folder: Path, limit: int = 6) -> None:
    """For up to ``limit`` defective views: the view | defect mask | local map | global map, side by side."""
    import cv2

    from detectors.input_prep import to_capture_size

    folder.mkdir(parents=True, exist_ok=True)
    records = {r.id: r for r in store.captures(campaign="defective")}
    for n, rid in enumerate(list(maps["local"])[:limit]):
        record = records[rid]
        image = np.asarray(store.load_image(record), dtype=np.float32)
        image = image / (65535.0 if image.max() > 255 else 255.0)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        h, w = image.shape[:2]
        mask = store.get_mask(rid)[0].astype(np.float32)
        panels = [image, np.repeat(mask[..., None], 3, axis=2)]
        for branch in ("local", "global"):
            m = to_capture_size(maps[branch][rid], h, w)
            m = (m - m.min()) / max(1e-9, float(m.max() - m.min()))
            panels.append(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1] / 255.0)
        strip = np.concatenate([cv2.resize(p, (w // 2, h // 2)) for p in panels], axis=1)
        cv2.imwrite(str(folder / f"defective_{n}.png"), (strip[..., ::-1] * 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    from acquisition.store import CaptureStore
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--difficulty", default="default")
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--train-parts", type=int, default=10)
    parser.add_argument("--good-parts", type=int, default=6)
    parser.add_argument("--defective-parts", type=int, default=6)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--efficientad", default="{}", help="JSON config overrides")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pictures", type=Path, default=None, help="folder for PNGs of defective views and maps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diagnose_efficientad.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    overrides = json.loads(args.efficientad)
    started, load_before = time.perf_counter(), os.getloadavg()
    report: dict[str, Any] = {"benchmark": "diagnose_efficientad", "scenario": args.scenario,
                              "difficulty": args.difficulty, "overrides": overrides, "branches": {}}
    with tempfile.TemporaryDirectory(prefix="diag_ead_") as tmp:
        store_path = Path(tmp) / "store"
        capture_sets(store_path, args)
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        train_model(load_train_config(CONFIG, overrides), store_path, model_dir, campaigns=["train"])
        report["train_s"] = time.perf_counter() - t0
        model = load_model(model_dir, device="cpu")
        maps: dict[str, dict[str, Any]] = {}
        with CaptureStore(store_path) as store:
            for branch in BRANCHES:
                report["branches"][branch], maps[branch] = branch_report(store, model, branch)
                print(f"{branch}: {json.dumps(report['branches'][branch])}", flush=True)
            if args.pictures is not None:
                write_pictures(store, maps, args.pictures)
    report["wall_s"] = time.perf_counter() - started
    report["loadavg_before"], report["loadavg_after"] = load_before, os.getloadavg()
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
