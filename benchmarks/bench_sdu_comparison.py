"""The SDU cell report's comparison on the simulated cell: EfficientAD beside SimpleNet, false-reject rate of
good parts at zero missed defective parts, per image and per part, from ONE command.

The report (../shared/papers/sdu-cell-simplenet-report.txt) found, on its glass-fibre sheets, that at zero
missed defects EfficientAD rejected about 25 % of good sheets against SimpleNet's 36 %. Here, per scenario
(a pose plan of :mod:`benchmarks.bench_parts`): capture ``--train-parts`` good sheets, then ``--good-parts``
new good and ``--defective-parts`` new defective sheets ONCE; train each detector on the same training sheets
with ``cell train``'s code; score every capture once; then

* per image: the false-reject rate of good images at the highest threshold that misses no defective image
  (an image of a defective sheet counts as defective when the simulation's defect is visible in it; the
  views of defective sheets that do not show it are left out, as in bench_parts);
* per part: the same at zero missed defective parts, for the worst view (old rule) and for the part map
  fused by ``--rule`` (issue 18's part-level fusion).

Threshold-free (zero miss is read off the new sheets), so no training-side threshold enters these numbers.
Capture, scoring and fusion are bench_parts' own functions (imported, not copied). Detectors:
``--simplenet`` / ``--efficientad`` config overrides; defaults are small CPU settings (said in the JSON).

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_sdu_comparison [--scenario demo] [--train-parts 10]
      [--good-parts 12] [--defective-parts 12]
Writes benchmarks/results/sdu_comparison.json (numbers with the machine's load average).
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

from benchmarks.bench_parts import FAST_SIMPLENET, capture, fuse, score_parts  # noqa: E402
from benchmarks.timing import write_json  # noqa: E402

CONFIGS = {"simplenet": REPO / "configs" / "detectors" / "simplenet.yaml",
           "efficientad": REPO / "configs" / "detectors" / "efficientad.yaml"}
#: EfficientAD at the bench_parts SimpleNet's resolution (128 px), otherwise the CPU recipe of
#: configs/detectors/efficientad.yaml (lr 1e-4, bf16 training steps, 600 iterations: ~7 min on one shared core).
FAST_EFFICIENTAD = {"image_size": 128, "iterations": 600, "device": "cpu"}


def zero_miss_rate(scores: np.ndarray, defective: np.ndarray) -> dict[str, Any]:
    """False rejects of the good items at the highest threshold that misses no defective item."""
    from cell.part_evaluation import zero_miss

    return zero_miss(np.asarray(scores, float), np.asarray(defective, bool))


def judged_views(store: Any, test: dict[str, list]) -> list[tuple[Any, float, Any, bool]]:
    """The views the per-image rate judges, from :func:`score_parts`' ``test``: (record, score, map, defective)
    for every view of a good sheet (defective False) and every view of a defective sheet whose mask shows the
    defect (True); views of defective sheets that do not show it are left out."""
    labels = {p.part_id: p.label for p in store.parts()}
    masks = store.mask_infos()
    return [(r, score, amap, labels[p] == "defective") for p, views in test.items() for r, score, amap in views
            if labels[p] == "good" or (r.id in masks and masks[r.id].area_px > 0)]


def evaluate(store: Any, model: Any, rule: str, k: int) -> dict[str, Any]:
    """Per-image and per-part zero-miss false-reject rates of one trained model on the new sheets."""
    from cell.part_map import PartMapConfig
    from cell.part_scoring import StoredPartMaps
    from sklearn.metrics import roc_auc_score

    test = score_parts(store, model, ["good", "defective"])
    labels = {p.part_id: p.label for p in store.parts()}
    images = judged_views(store, test)
    img_scores = np.array([v[1] for v in images])
    img_labels = np.array([v[3] for v in images])
    config = PartMapConfig(fusion=rule, k=k)
    maps = StoredPartMaps(store, config)
    parts = list(test)
    part_labels = np.array([labels[p] == "defective" for p in parts])
    worst = np.array([max(v[1] for v in test[p]) for p in parts])
    fused = np.array([fuse(maps, test[p], config).score for p in parts])
    out = {"per_image": {"n_good": int((~img_labels).sum()), "n_defective": int(img_labels.sum()),
                         "auroc": float(roc_auc_score(img_labels, img_scores)),
                         "at_zero_miss": zero_miss_rate(img_scores, img_labels)}}
    for name, scores in (("per_part_worst_view", worst), (f"per_part_fused_{config.describe()}", fused)):
        out[name] = {"n_good": int((~part_labels).sum()), "n_defective": int(part_labels.sum()),
                     "auroc": float(roc_auc_score(part_labels, scores)), "at_zero_miss": zero_miss_rate(scores, part_labels)}
    return out


def capture_sets(store_path: Path, args: argparse.Namespace) -> None:
    """A new store at ``store_path`` with the campaigns ``train`` (``args.train_parts`` good sheets), ``good``
    and ``defective`` (every sheet with a defect), each from its own seed (``args.seed`` + 0 / 1 / 2) of the
    ``args.scenario`` / ``camera`` / ``difficulty`` cell."""
    from acquisition.store import CaptureStore

    with CaptureStore(store_path, create=True) as store:
        for campaign, parts, offset, rate in (("train", args.train_parts, 0, 0.0), ("good", args.good_parts, 1, 0.0),
                                              ("defective", args.defective_parts, 2, 1.0)):
            capture(store, args.scenario, args.camera, args.difficulty, campaign, parts, args.seed + offset, rate)


def main(argv: list[str] | None = None) -> int:
    from acquisition.store import CaptureStore
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo", help="a bench_parts scenario: demo | sheet_raster")
    parser.add_argument("--difficulty", default="default")
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--train-parts", type=int, default=10)
    parser.add_argument("--good-parts", type=int, default=12)
    parser.add_argument("--defective-parts", type=int, default=12)
    parser.add_argument("--rule", default="max", help="part-map fusion rule (bench_parts RULES)")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--simplenet", default=json.dumps(FAST_SIMPLENET), help="JSON config overrides")
    parser.add_argument("--efficientad", default=json.dumps(FAST_EFFICIENTAD), help="JSON config overrides")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sdu_comparison.json")
    parser.add_argument("--methods", default="simplenet,efficientad",
                        help="comma-separated subset of simplenet,efficientad (default both: the comparison)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a loaded shared CPU)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(CONFIGS))
    if unknown or not methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONFIGS)}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    overrides = {"simplenet": json.loads(args.simplenet), "efficientad": json.loads(args.efficientad)}
    load_before = os.getloadavg()
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "sdu_comparison", "scenario": args.scenario, "camera": args.camera,
                              "threads": args.threads,
                              "difficulty": args.difficulty, "rule": args.rule, "seed": args.seed,
                              "parts": {"train": args.train_parts, "good": args.good_parts, "defective": args.defective_parts},
                              "detectors": {}}
    with tempfile.TemporaryDirectory(prefix="bench_sdu_") as tmp:
        store_path = Path(tmp) / "store"
        capture_sets(store_path, args)
        print(f"captured in {time.perf_counter() - started:.0f} s", flush=True)
        for method in methods:
            path = CONFIGS[method]
            t0 = time.perf_counter()
            model_dir = Path(tmp) / f"{method}_model"
            train_model(load_train_config(path, overrides[method]), store_path, model_dir, campaigns=["train"])
            train_s = time.perf_counter() - t0
            model = load_model(model_dir, device="cpu")
            t0 = time.perf_counter()
            with CaptureStore(store_path) as store:
                result = evaluate(store, model, args.rule, args.k)
            result.update({"config": str(path.relative_to(REPO)), "overrides": overrides[method],
                           "train_s": train_s, "score_s": time.perf_counter() - t0})
            report["detectors"][method] = result
            print(f"{method}: {json.dumps({k: v for k, v in result.items() if k.startswith('per_')})}", flush=True)
    report["wall_s"] = time.perf_counter() - started
    report["loadavg_before"], report["loadavg_after"] = load_before, os.getloadavg()
    write_json(args.out, report)
    print(table(report))
    print(f"written {args.out} (load average {load_before} -> {report['loadavg_after']})")
    return 0


def table(report: dict[str, Any]) -> str:
    """Markdown: false-reject rate of good items at zero missed defective items, per detector and level."""
    lines = ["| detector | per image | per part, worst view | per part, fused |", "|---|---|---|---|"]
    for method, r in report["detectors"].items():
        cells = []
        for key in ("per_image", "per_part_worst_view", next(k for k in r if k.startswith("per_part_fused"))):
            z = r[key]["at_zero_miss"]
            cells.append(f"{z['false_reject_rate']:.2f} ({z['false_rejects']}/{z['good_parts']}), AUROC {r[key]['auroc']:.3f}"
                         if z.get("false_reject_rate") is not None else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
