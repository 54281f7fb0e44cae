"""Glancing at the Patch on a CPU: where the time goes, and the fast path against the reference, interleaved.

    python -m benchmarks.bench_glance_cpu [--dataset ../shared/data/bottle] [--model DIR]
        [--config configs/detectors/glance.yaml] [--threads 2] [--images 4] [--repeats 6] [--profile]

Without ``--model``, a model of the config's geometry is fitted for a few steps on 8 training images (the
cost of inference does not depend on how well the weights are trained). On ``--images`` real test images
(256 px with the default config), at batch 1 and ``--threads`` torch threads:

* arithmetic: multiply-accumulates per image counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matrix products, FLOPs / 2) for the reference and the fast path;
* time: ``repeats`` rounds, each timing the reference (:func:`reference_score_batch`, every masked view
  through ``GlobalNet.forward``) and the fast path (``_score_batch``) on the same image back to back, so the
  ratio is honest on a shared machine; wall and process-CPU ms per image, the load average beside each;
  plus the fast path's stages (Local-Net, masked views, IDW map) and full ``predict``;
* ``--profile``: the top operators (torch.profiler, self CPU time) of one call of each path;
* parity: max relative difference of the image scores and max absolute difference of the maps.

Writes ``benchmarks/results/glance_cpu.json``. Timings on a loaded machine say little alone: read them
with the recorded load averages (and the CPU-time column).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import Stopwatch, write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "glance_cpu.json"


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of ``fn()`` (convolutions and matrix products; FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops() // 2)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    with Stopwatch() as sw:
        fn()
    return sw.wall_s * 1e3, sw.cpu_s * 1e3


def _top_ops(fn: Callable[[], Any], rows: int = 12) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "shapes": str(e.input_shapes)[:120], "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count}
        for e in events[:rows]
    ]


def _detector(args: argparse.Namespace) -> Any:
    import detectors
    from cell.training import load_train_config
    from detectors.imagesets import MVTecImageSet

    if args.model:
        return detectors.load(args.model)
    config = load_train_config(args.config).config
    config.update(device="cpu", local_steps=2, global_steps=2, distill_patches=64)
    detector = detectors.create("glance", **config)
    train = MVTecImageSet(args.dataset, "train", image_size=detector.config.image_size).subset(range(8))
    detector.fit(train)
    return detector


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detectors.glance.model import gather_patches
    from detectors.glance.reference import reference_score_batch
    from detectors.imagesets import MVTecImageSet

    torch.set_num_threads(args.threads)
    load_at_start = _load()
    detector = _detector(args)
    if detector.name != "glance":
        raise SystemExit(f"error: {args.model}: holds a '{detector.name}' model, not a 'glance' one")
    cfg = detector.config
    images = MVTecImageSet(args.dataset, "test", image_size=cfg.image_size, max_per_type=1).stack_images()[: args.images]
    singles = [images[i : i + 1] for i in range(images.shape[0])]
    fast = detector._score_batch
    reference = lambda x: reference_score_batch(detector, x)  # noqa: E731

    with torch.no_grad():
        for x in singles[:1]:  # warm-up (allocator, kernels, IDW weights)
            fast(x)
            reference(x)
        macs = {"reference": _macs(lambda: reference(singles[0])), "fast": _macs(lambda: fast(singles[0]))}
        gimg = detector._to_global(singles[0])
        macs["fast_masked_views"] = _macs(lambda: detector._views(detector.global_net, gimg))
        macs["local_net"] = _macs(
            lambda: detector._local_features(gather_patches(singles[0][0], detector._patch_rows, detector._patch_cols))
        )

        # parity on every image
        ref_out = [reference(x) for x in singles]
        fast_out = [fast(x) for x in singles]
        ref_scores = torch.cat([s for s, _ in ref_out])
        fast_scores = torch.cat([s for s, _ in fast_out])
        ref_maps = torch.cat([m for _, m in ref_out])
        fast_maps = torch.cat([m for _, m in fast_out])
        parity = {
            "images": len(singles),
            "score_max_rel_diff": float(((fast_scores - ref_scores).abs() / ref_scores.abs().clamp_min(1e-12)).max()),
            "map_max_abs_diff": float((fast_maps - ref_maps).abs().max()),
            "map_max_abs": float(ref_maps.abs().max()),
        }

        samples: dict[str, list[dict[str, Any]]] = {"reference": [], "fast": []}
        for r in range(args.repeats):
            x = singles[r % len(singles)]
            order = ("reference", "fast") if r % 2 == 0 else ("fast", "reference")
            for name in order:
                wall, cpu = _timed(lambda: (reference if name == "reference" else fast)(x))
                samples[name].append({"wall_ms": round(wall, 1), "cpu_ms": round(cpu, 1), "load": _load()})

        stages: dict[str, list[dict[str, Any]]] = {"local_net": [], "masked_views": [], "predict": []}
        for r in range(args.repeats):
            x = singles[r % len(singles)]
            g = detector._to_global(x)
            for name, fn in (
                ("local_net", lambda: detector._local_features(gather_patches(x[0], detector._patch_rows, detector._patch_cols))),
                ("masked_views", lambda: detector._views(detector.global_net, g)),
                ("predict", lambda: detector.predict(x)),
            ):
                wall, cpu = _timed(fn)
                stages[name].append({"wall_ms": round(wall, 1), "cpu_ms": round(cpu, 1), "load": _load()})

        profiles = {}
        if args.profile:
            profiles = {"reference": _top_ops(lambda: reference(singles[0])), "fast": _top_ops(lambda: fast(singles[0]))}

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(np.median([row[key] for row in rows]))

    summary = {
        name: {"median_wall_ms": med(rows, "wall_ms"), "median_cpu_ms": med(rows, "cpu_ms"), "n": len(rows)}
        for name, rows in {**samples, **stages}.items()
    }
    return {
        "benchmark": "glance_cpu",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": _load(),
        "model": args.model or f"{args.config} geometry, fitted 2 + 2 steps on 8 training images",
        "dataset": str(args.dataset),
        "image_size": cfg.image_size,
        "patches_per_image": detector.patches_per_image,
        "batch": 1,
        "gmac_per_image": {k: round(v / 1e9, 3) for k, v in macs.items()},
        "masked_view_crops": [{"window": list(w), "crop": list(c)} for w, c in detector._views.shapes],
        "summary": summary,
        "speedup_median_wall": summary["reference"]["median_wall_ms"] / summary["fast"]["median_wall_ms"],
        "speedup_median_cpu": summary["reference"]["median_cpu_ms"] / summary["fast"]["median_cpu_ms"],
        "samples": samples,
        "stages": stages,
        "parity": parity,
        "profiles": profiles,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "data" / "bottle")
    parser.add_argument("--model", type=Path, default=None, help="a trained glance model directory")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "detectors" / "glance.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("threads", "images", "repeats"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if not (args.dataset / "test").is_dir():
        print(f"error: {args.dataset}: no test/ folder (an MVTec-layout dataset expected)", file=sys.stderr)
        return 2
    from cell.errors import CellError
    from detectors.errors import DetectorError

    try:
        result = run(args)
    except (CellError, DetectorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, result)
    s = result["summary"]
    print(
        f"glance CPU batch 1 ({result['torch_threads']} threads, load {result['load_average_at_start']} -> "
        f"{result['load_average_at_end']}): reference {s['reference']['median_wall_ms']:.0f} ms wall / "
        f"{s['reference']['median_cpu_ms']:.0f} ms CPU, fast {s['fast']['median_wall_ms']:.0f} ms wall / "
        f"{s['fast']['median_cpu_ms']:.0f} ms CPU (x{result['speedup_median_wall']:.1f} wall); GMAC "
        f"{result['gmac_per_image']}; parity {result['parity']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
