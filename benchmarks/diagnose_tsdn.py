"""Where a trained TSDN's anomaly maps go wrong: real defects against its own synthetic (SURF) anomalies.

    python -m benchmarks.bench_detectors --method tsdn --dataset ../shared/data/bottle --save-model /tmp/tsdn_b
    python -m benchmarks.diagnose_tsdn --model /tmp/tsdn_b --dataset ../shared/data/bottle

TSDN learns to undo superpixel random filling (SURF). This asks whether what it learned carries over to real
defects, from the model alone (``test/`` is only read, nothing is selected on it):

* **real defects**: pixel AUROC of the score map (blurred L2 of I - R) per defect type against the good test
  images; the raw reconstruction error on defect pixels, on normal pixels and its quantiles; how many defect
  pixels score above the 99th percentile of normal pixels; DCD_A's mask M' on defect and normal pixels.
* **synthetic defects**: the good test images distorted by SURF (seeded, the training recipe's N_s / S_s),
  scored the same way: pixel AUROC against the fill mask, error on filled / other pixels, how far R is from
  the clean image on the filled pixels (the inpainting error), and M' on filled / other pixels.

A model that scores SURF fills near-perfectly but real defects poorly learned the synthetic anomaly rather
than normality. Writes JSON (``--out``) and prints a summary.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from detectors.errors import DetectorError
from detectors.input_prep import prepared_mvtec_split
from detectors.metrics import pixel_auroc
from detectors.model_dir import load_detector
from benchmarks.timing import write_json
from detectors.tsdn.surf import surf_batch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class DiagnosisError(Exception):
    """The test set cannot be diagnosed (e.g. no good images to distort); one line."""


def _finite_or_none(value: Any) -> Any:
    """JSON-safe copy of ``value``: NaN / infinite floats (a metric with one class missing) become None."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _mean(values: np.ndarray, where: np.ndarray) -> Optional[float]:
    return float(values[where].mean()) if where.any() else None


def diagnose(detector: Any, dataset: Path, seed: int = 0, log: Any = print) -> dict[str, Any]:
    """The diagnosis of a trained TSDN ``detector`` on ``dataset/test`` (see the module doc) as a dict."""
    cfg = detector.config
    test = prepared_mvtec_split(dataset, "test", int(cfg.image_size))  # as bench_detectors scored it
    images = test.stack_images()
    masks = test.stack_masks().numpy() > 0
    labels = np.asarray(test.labels)
    types = np.asarray(test.defect_types)
    log(f"tsdn diagnosis on {dataset.name}: {len(test)} test images at {cfg.image_size} px")

    recon, mask_pred = detector.streams(images)
    error, maps = (m.numpy() for m in detector.error_maps(images, recon))
    mask_pred = mask_pred.numpy()
    good = labels == 0
    if not good.any():
        raise DiagnosisError(f"{dataset}: test/ has no good images to distort with SURF")
    defective_normal = (~masks) & (labels == 1)[:, None, None]
    normal_pixels = error[~masks]
    p99 = float(np.quantile(normal_pixels, 0.99))
    real: dict[str, Any] = {
        "pixel_auroc": pixel_auroc(maps, masks),
        "pixel_auroc_unblurred": pixel_auroc(error, masks),
        "pixel_auroc_dcd_a_mask": pixel_auroc(mask_pred, masks),
        "error_mean_good_images": float(error[good].mean()),
        "error_mean_defect_pixels": _mean(error, masks),
        "error_mean_normal_pixels_of_defective_images": _mean(error, defective_normal),
        "error_normal_quantiles": {q: float(np.quantile(normal_pixels, float(q))) for q in ("0.5", "0.9", "0.99")},
        "defect_pixels_above_normal_p99": float((error[masks] > p99).mean()) if masks.any() else None,
        "dcd_a_mask_mean_defect_pixels": _mean(mask_pred, masks),
        "dcd_a_mask_mean_normal_pixels": _mean(mask_pred, ~masks),
        "per_type": {},
    }
    for kind in sorted(set(types[labels == 1])):
        pick = good | (types == kind)
        real["per_type"][str(kind)] = {
            "images": int((types == kind).sum()),
            "pixel_auroc": pixel_auroc(maps[pick], masks[pick]),
            "error_mean_defect_pixels": _mean(error[types == kind], masks[types == kind]),
        }

    clean = images[torch.from_numpy(good)]
    distorted, fill = surf_batch(clean, cfg.n_segments, cfg.n_filled, np.random.default_rng(seed))
    fill = fill[:, 0].numpy() > 0
    s_recon, s_mask = detector.streams(distorted)
    s_error, s_maps = (m.numpy() for m in detector.error_maps(distorted, s_recon))
    restore = torch.linalg.vector_norm(clean.float() - s_recon, dim=1).numpy()
    s_mask = s_mask.numpy()
    synthetic = {
        "images": int(len(clean)),
        "filled_fraction": float(fill.mean()),
        "pixel_auroc": pixel_auroc(s_maps, fill),
        "pixel_auroc_unblurred": pixel_auroc(s_error, fill),
        "pixel_auroc_dcd_a_mask": pixel_auroc(s_mask, fill),
        "error_mean_filled_pixels": _mean(s_error, fill),
        "error_mean_other_pixels": _mean(s_error, ~fill),
        "inpainting_error_mean_filled_pixels": _mean(restore, fill),
        "dcd_a_mask_mean_filled_pixels": _mean(s_mask, fill),
        "dcd_a_mask_mean_other_pixels": _mean(s_mask, ~fill),
    }
    return _finite_or_none({
        "dataset": dataset.name,
        "dataset_path": str(dataset),
        "config": cfg.model_dump(),
        "surf_seed": seed,
        "real_defects": real,
        "synthetic_surf": synthetic,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    })


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary(result: dict[str, Any]) -> list[str]:
    """A few human-readable lines of a :func:`diagnose` result."""
    real, syn = result["real_defects"], result["synthetic_surf"]
    lines = [
        f"real defects:   pixel AUROC {_fmt(real['pixel_auroc'])} (unblurred {_fmt(real['pixel_auroc_unblurred'])}, "
        f"DCD_A mask {_fmt(real['pixel_auroc_dcd_a_mask'])}); error defect {_fmt(real['error_mean_defect_pixels'])} "
        f"vs normal {_fmt(real['error_mean_normal_pixels_of_defective_images'])}; "
        f"{_fmt(real['defect_pixels_above_normal_p99'])} of defect pixels above normal p99",
        f"SURF fills:     pixel AUROC {_fmt(syn['pixel_auroc'])} (unblurred {_fmt(syn['pixel_auroc_unblurred'])}, "
        f"DCD_A mask {_fmt(syn['pixel_auroc_dcd_a_mask'])}); error filled {_fmt(syn['error_mean_filled_pixels'])} "
        f"vs other {_fmt(syn['error_mean_other_pixels'])}; inpainting error {_fmt(syn['inpainting_error_mean_filled_pixels'])}",
    ]
    lines += [
        f"  {kind}: pixel AUROC {_fmt(v['pixel_auroc'])}, error on defect pixels {_fmt(v['error_mean_defect_pixels'])}"
        for kind, v in real["per_type"].items()
    ]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose_tsdn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a TSDN model directory (cell train / --save-model)")
    parser.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SURF distortions of the good test images")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default results/tsdn_diagnosis_<dataset>.json)")
    args = parser.parse_args(argv)
    if not (args.dataset / "test").is_dir():
        print(f"error: {args.dataset}: not an MVTec-layout folder (needs test/)", file=sys.stderr)
        return 2
    try:
        detector = load_detector(args.model, expected_method="tsdn", device=args.device)
        result = diagnose(detector, args.dataset, seed=args.seed)
    except (DetectorError, DiagnosisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = write_json(args.out or RESULTS_DIR / f"tsdn_diagnosis_{args.dataset.name}.json", result)
    for line in summary(result):
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
