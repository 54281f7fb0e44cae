"""Where EfficientAD's CPU time goes: time and profile ``predict`` at batch 1 and training steps.

    nice -n 5 python -m benchmarks.profile_efficientad --dataset /work/shared/data/bottle \
        [--image-size 256] [--threads 1] [--steps 4] [--set cpu_bf16_training=true ...]

Fits the detector (``configs/detectors/efficientad.yaml`` + ``--set`` overrides, ``--steps`` iterations,
no checkpoints) on the first ``--n-train`` images of ``train/good``, times every training step (wall and
process CPU seconds, from the progress callback), then ``--repeats`` batch-1 predictions of ``test/``
images; writes a torch-profiler table (self CPU per op) of one predict and of one training step, the timings
and the load average to ``benchmarks/results/profile_efficientad_<px>.json`` / ``.txt``. CPU seconds are the
number to compare on a shared machine: wall time grows with the other jobs' load.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _table(prof: "profile", rows: int = 15) -> str:
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    from cell.config import parse_overrides
    from cell.training import load_train_config
    from detectors import registry
    from detectors.input_prep import prepared_mvtec_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=4, help="training iterations timed")
    parser.add_argument("--n-train", type=int, default=12, help="training images used")
    parser.add_argument("--repeats", type=int, default=5, help="timed batch-1 predictions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    load_start = os.getloadavg()
    config = load_train_config(Path("configs/detectors/efficientad.yaml")).config
    overrides = {**parse_overrides(args.overrides), "image_size": args.image_size, "iterations": args.steps,
                 "device": "cpu", "checkpoint_dir": None}
    config = {**config, **overrides}
    train_all = prepared_mvtec_split(args.dataset, "train", args.image_size)
    train = train_all[: min(args.n_train, len(train_all))]
    test = prepared_mvtec_split(args.dataset, "test", args.image_size)

    marks: list[tuple[float, float]] = []

    def progress(done: int, total: int, message: str) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    detector = registry.create("efficientad", **config)
    t0, c0 = time.perf_counter(), time.process_time()
    detector.fit(train, progress=progress)
    steps_wall = np.diff([t0] + [m[0] for m in marks])[1:]  # the first interval includes the set-up
    steps_cpu = np.diff([c0] + [m[1] for m in marks])[1:]
    setup = (marks[0][0] - t0, marks[0][1] - c0) if marks else (float("nan"), float("nan"))

    probe = test[0].image[None]  # (1, 3, S, S)
    detector.predict(probe)  # warm-up
    wall, cpu = [], []
    for _ in range(args.repeats):
        a, b = time.perf_counter(), time.process_time()
        detector.predict(probe)
        wall.append(time.perf_counter() - a)
        cpu.append(time.process_time() - b)
    with profile(activities=[ProfilerActivity.CPU]) as prof_predict:
        detector.predict(probe)

    # one more training step, profiled (same config, one iteration)
    one = registry.create("efficientad", **{**config, "iterations": 1})
    with profile(activities=[ProfilerActivity.CPU]) as prof_fit:
        one.fit(train)

    result = {
        "image_size": args.image_size,
        "threads": torch.get_num_threads(),
        "config_overrides": overrides,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "first_step_incl_setup_s": {"wall": setup[0], "cpu": setup[1]},
        "train_step_s": {"wall_median": float(np.median(steps_wall)) if len(steps_wall) else None,
                         "cpu_median": float(np.median(steps_cpu)) if len(steps_cpu) else None,
                         "n": int(len(steps_wall))},
        "predict_b1_ms": {"wall_median": 1000 * float(np.median(wall)), "cpu_median": 1000 * float(np.median(cpu))},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"profile_efficientad_{args.image_size}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".txt").write_text(
        "predict, batch 1 (self CPU)\n" + _table(prof_predict) + "\n\none fit of 1 step incl. teacher statistics and "
        "validation quantiles (self CPU)\n" + _table(prof_fit, 25) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
