"""Peak memory of PatchCore's fit (and scoring) on the CPU: the issue's bound is <= 2 GB for 1,000 training
images at 256 px with the default coreset ratio.

    python -m benchmarks.bench_patchcore_memory [--images 1000] [--image-size 256] [--score 8]
        [--set key=value ...] [--out benchmarks/results]

Training images are synthetic uniform-random RGB images generated one at a time from their index (nothing
held: the set itself costs no memory), fed to the real ``PatchCore.fit`` with the class defaults (the paper's
recipe: coreset ratio 0.1, 1024-d features, 128-d projection; backbone Lite0 with offline weights, CPU),
overridable with ``--set`` (the config file's CPU recipe: ``--set coreset_ratio=0.01``, as measured in the
README). After fit, ``--score`` synthetic images are scored (the nearest-neighbour search
over the bank).

Memory is measured two ways: the kernel's high-water mark of the process's resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: every allocation, torch's included) and a 0.5 s sampler of
the current RSS (``/proc/self/statm``) that attributes the peak to the phase running (model load, pass 1
features + projection, greedy coreset, pass 2 memory bank, scoring). The JSON
(``benchmarks/results/patchcore_memory_<images>.json``) is rewritten every 30 s while the run goes on
(``"complete": false``, the phase and its progress): on a 2-core machine the greedy selection over 1,024,000
patches takes hours, and a run that is stopped still reports the peak of every phase it reached.
It also records torch's own baseline (the RSS after ``import torch`` and after building the model), where
the high-water mark rose (phase, progress, ``ru_maxrss`` each time it rose by 8 MiB), the memory expected from
the shapes, the load average, the wall time of each phase and the greedy selection's seconds per step with
what the other ratios would cost at that rate (one step = one pass over all N projections).

``--greedy-steps K`` (a memory measurement, not a model): the greedy selection runs its first K steps and the
rest of the bank's rows are drawn at random from the points not chosen (seeded). Why this measures the same
memory: the greedy keeps only O(N) vectors beside the (k, N) projections whatever the number of steps, and
pass 2 allocates the bank from its row count alone, so every phase allocates what the full fit allocates;
only the selection's content differs. It exists because the paper's ratio 0.1 on 1,000 images is 102,400
greedy steps (hours on 2 cores). The JSON's ``selection`` says which selection ran.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.timing import write_json  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RandomImages:
    """``n`` synthetic (3, S, S) float32 images in [0, 1], image i drawn from seed ``seed + i`` when asked for:
    a training set that holds nothing in memory."""

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        self.n, self.size, self.seed = n, size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        gen = torch.Generator().manual_seed(self.seed + i)
        return torch.rand(3, self.size, self.size, generator=gen)


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """The process's current resident set, MiB (from /proc/self/statm; the high-water mark where absent)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


class PhaseMonitor:
    """Samples the RSS every ``interval`` s in a thread and keeps the peak per phase; writes the result
    document every ``write_every`` s through ``flush``."""

    def __init__(self, flush: Any, interval: float = 0.5, write_every: float = 30.0) -> None:
        self.phase = "start"
        self.progress = ""
        self.phases: dict[str, dict[str, float]] = {}
        self._flush = flush
        self._interval = interval
        self._write_every = write_every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def set_phase(self, phase: str, progress: str = "") -> None:
        with self._lock:
            if phase != self.phase:
                self._sample()
                now = time.perf_counter()
                if self.phase in self.phases:
                    self.phases[self.phase]["seconds"] = round(now - self.phases[self.phase]["_start"], 1)
                self.phases.setdefault(phase, {"peak_rss_mb": 0.0, "_start": now, "load_average_at_start": os.getloadavg()[0]})
                self.phase = phase
            self.progress = progress

    def _sample(self) -> None:
        entry = self.phases.setdefault(self.phase, {"peak_rss_mb": 0.0, "_start": time.perf_counter(), "load_average_at_start": os.getloadavg()[0]})
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], round(current_rss_mb(), 1))

    def _run(self) -> None:
        last_write = time.perf_counter()
        while not self._stop.wait(self._interval):
            with self._lock:
                self._sample()
            if time.perf_counter() - last_write >= self._write_every:
                self._flush(complete=False)
                last_write = time.perf_counter()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._sample()
            now = time.perf_counter()
            out = {}
            for name, entry in self.phases.items():
                row = {k: v for k, v in entry.items() if not k.startswith("_")}
                row.setdefault("seconds", round(now - entry["_start"], 1))
                out[name] = row
            return {"phase": self.phase, "progress": self.progress, "phases": out}

    def __enter__(self) -> "PhaseMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def expected_memory_mb(n_images: int, patches_per_image: int, cfg: Any) -> dict[str, float]:
    """What the shapes say the big buffers cost (float32), MiB: the (k, N) projections of pass 1, the (M, D)
    bank, the greedy selection's (N,) vectors."""
    n = n_images * patches_per_image
    m = max(1, min(n, round(cfg.coreset_ratio * n)))
    mib = 2**20
    return {
        "n_patches": n,
        "bank_rows": m,
        "projections_mb": round(n * cfg.projection_dim * 4 / mib, 1),
        "bank_mb": round(m * cfg.target_dim * 4 / mib, 1),
        "greedy_vectors_mb": round(n * (4 + 4 + 4) / mib + m * 8 / mib, 1),
    }


def greedy_then_random(steps: int, seed: int = 0) -> Any:
    """A stand-in for :func:`detectors.patchcore.model.greedy_coreset` with its signature: the real greedy for
    the first ``steps`` picks, then the remaining picks uniformly at random (without replacement, ``seed``)
    from the points not yet chosen. Same output shape and dtype (n_select,) int64; used only by
    ``--greedy-steps`` (see module docstring)."""
    from detectors.patchcore.model import greedy_coreset

    def select(columns: torch.Tensor, n_select: int, *, first: int = 0, progress: Any = None) -> torch.Tensor:
        head = greedy_coreset(columns, min(steps, n_select), first=first, progress=progress)
        if n_select <= head.numel():
            return head
        free = torch.ones(columns.shape[1], dtype=torch.bool)
        free[head] = False
        pool = torch.nonzero(free).flatten()
        gen = torch.Generator().manual_seed(seed)
        rest = pool[torch.randperm(pool.numel(), generator=gen)[: n_select - head.numel()]]
        if progress is not None:
            progress(n_select, n_select)
        return torch.cat([head, rest.to(head.device)])

    return select


def run(images: int, image_size: int, score: int, overrides: dict[str, Any], out_dir: Path,
        greedy_steps: Optional[int] = None) -> dict[str, Any]:
    """Fit PatchCore on ``images`` random images (class defaults + ``overrides``), score ``score`` more; write
    and return the result document. ``greedy_steps``: the memory stand-in selection (module docstring)."""
    import detectors
    import detectors.patchcore.detector as patchcore_detector

    config = {"image_size": image_size, "device": "cpu", **overrides}
    suffix = "" if greedy_steps is None else f"_greedy{greedy_steps}"
    out_path = out_dir / f"patchcore_memory_{images}{suffix}.json"
    doc: dict[str, Any] = {
        "benchmark": "bench_patchcore_memory",
        "selection": (
            {"kind": "greedy coreset (the real fit)"} if greedy_steps is None else
            {"kind": "memory stand-in: greedy for the first steps, the rest random (not a usable model)",
             "greedy_steps": greedy_steps}
        ),
        "images": images,
        "image_size": image_size,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "peak_rss_kind": "ru_maxrss of the whole process (kernel high-water mark) + 0.5 s RSS samples per phase",
        # torch's own baseline: this module imports torch at the top, so this is the process with torch
        # (and numpy) loaded, before any detector module or model
        "rss_after_import_torch_mb": round(current_rss_mb(), 1),
        "peak_rss_after_import_torch_mb": round(peak_rss_mb(), 1),
    }
    monitor: Optional[PhaseMonitor] = None
    t_start = time.perf_counter()

    def flush(complete: bool) -> None:
        state = monitor.snapshot() if monitor is not None else {}
        write_json(out_path, {
            **doc, **state, "complete": complete,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "load_average_now": list(os.getloadavg()),
            "elapsed_s": round(time.perf_counter() - t_start, 1),
        })

    monitor = PhaseMonitor(flush)
    with monitor:
        monitor.set_phase("model")
        detector = detectors.create("patchcore", **config)
        _ = detector.aggregator  # builds the backbone (offline weights)
        doc["config"] = detector.config.model_dump()
        probe = detector._features(torch.zeros(1, 3, image_size, image_size))
        per_image = int(probe.shape[1] * probe.shape[2])
        del probe
        doc["expected"] = expected_memory_mb(images, per_image, detector.config)
        doc["rss_after_model_mb"] = round(current_rss_mb(), 1)
        doc["peak_rss_after_model_mb"] = round(peak_rss_mb(), 1)
        # where the high-water mark rose: (phase, progress message, ru_maxrss MiB) each time it rose by
        # >= 8 MiB since the last entry (the progress callback runs after every batch of pass 1 and pass 2)
        rises: list[list[Any]] = [["model", "built", doc["peak_rss_after_model_mb"]]]
        doc["peak_rss_rises"] = rises

        def progress(done: int, total: int, message: str) -> None:
            phase = {0: "pass1_features", 1: "greedy_coreset", 2: "pass2_bank", 3: "pass2_bank"}[done]
            monitor.set_phase(phase, message)
            peak = round(peak_rss_mb(), 1)
            if peak >= rises[-1][2] + 8:
                rises.append([phase, message, peak])

        monitor.set_phase("pass1_features")
        real_greedy = patchcore_detector.greedy_coreset
        if greedy_steps is not None:
            patchcore_detector.greedy_coreset = greedy_then_random(greedy_steps)
        try:
            stats = detector.fit(RandomImages(images, image_size, seed=0), progress=progress)
        finally:
            patchcore_detector.greedy_coreset = real_greedy
        doc["fit_stats"] = stats
        doc["peak_rss_after_fit_mb"] = round(peak_rss_mb(), 1)
        n_bank, n_patches = stats["bank_size"][0], stats["n_patches"]
        if n_bank < n_patches:
            # one greedy step = one pass over all N projections, whatever the ratio: the cost of a ratio r is
            # r * N steps at this rate (under this run's load; with --greedy-steps the random fill's
            # fraction of a second is in it too)
            per_step = stats["coreset_seconds"] / (n_bank if greedy_steps is None else min(greedy_steps, n_bank))
            doc["greedy"] = {
                "seconds_per_step": round(per_step, 5),
                "estimated_seconds_by_ratio": {str(r): round(per_step * round(r * n_patches)) for r in (0.01, 0.1, 0.25)},
            }
        if score > 0:
            monitor.set_phase("scoring", f"{score} images")
            test = torch.stack([RandomImages(score, image_size, seed=10**6)[i] for i in range(score)])
            t0 = time.perf_counter()
            pred = detector.predict(test)
            doc["scoring"] = {
                "images": score,
                "seconds": round(time.perf_counter() - t0, 2),
                "finite": bool(torch.isfinite(torch.from_numpy(pred.score)).all()),
            }
        monitor.set_phase("done")
    flush(complete=True)
    return {**monitor.snapshot(), **doc, "peak_rss_mb": round(peak_rss_mb(), 1), "out": str(out_path)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_patchcore_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--image-size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--score", type=int, default=8, help="images scored after fit (default 8; 0: none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--greedy-steps", type=int, default=None, metavar="K",
                        help="memory stand-in: K greedy steps, the rest of the bank random (see the module docstring)")
    args = parser.parse_args(argv)
    from cell.config import parse_overrides
    from cell.errors import CellError
    from detectors.errors import DetectorError

    if args.images < 1 or args.image_size < 32 or args.score < 0:
        print("error: --images must be >= 1, --image-size >= 32 and --score >= 0", file=sys.stderr)
        return 2
    if args.greedy_steps is not None and args.greedy_steps < 1:
        print(f"error: --greedy-steps must be >= 1, got {args.greedy_steps}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        result = run(args.images, args.image_size, args.score, parse_overrides(args.overrides), args.out,
                     greedy_steps=args.greedy_steps)
    except (DetectorError, CellError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"patchcore fit on {args.images} images at {args.image_size} px: peak RSS {result['peak_rss_mb']:.0f} MiB "
        f"(bank {result['fit_stats']['bank_size']}); per phase: "
        + ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in result["phases"].items())
    )
    print(f"wrote {result['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
