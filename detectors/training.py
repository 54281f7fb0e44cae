"""Training plumbing shared by the step-based detectors (TSDN, SLSG): batch prefetching,
per-step random generators and atomic, resumable checkpoints.

Resuming: a training loop is a sequence of numbered steps whose random choices come only from
:func:`step_rng` / :func:`epoch_order` (functions of the seed and the step / epoch). A checkpoint holds the
step count, the model and optimiser states and a *fingerprint* of everything that shapes the run (config
without device/checkpoint keys, number and names of training images). Continuing from it therefore gives
the same model as an uninterrupted run.
"""
from __future__ import annotations

import collections
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch

from detectors.errors import DetectorError
from detectors.model_io import atomic_write
from detectors.train_images import StackedTrainImages

CHECKPOINT_FILE = "checkpoint.pt"
#: Config keys that do not change what a run learns (excluded from the resume fingerprint).
NON_LEARNING_KEYS = ("device", "checkpoint_dir", "checkpoint_every", "inference_batch_size", "prefetch_workers")


T = TypeVar("T")


def prefetch(make: Callable[[int], T], steps: range, workers: int) -> Iterator[tuple[int, T]]:
    """Yield ``(step, make(step))`` for ``steps`` in order, preparing up to ``2 * workers`` steps ahead.

    ``make`` builds one step's batch on the CPU (random choices only from :func:`step_rng`, so the batches
    are the same as without prefetching); it runs in ``workers`` threads while the caller trains on the
    previous batch. ``workers = 0`` builds each batch inline. An exception in ``make`` is raised here.
    """
    if workers <= 0:
        for step in steps:
            yield step, make(step)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")
    pending: collections.deque[tuple[int, Future]] = collections.deque()
    order = iter(steps)
    try:
        for step in order:
            pending.append((step, pool.submit(make, step)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            step, future = pending.popleft()
            following = next(order, None)
            if following is not None:
                pending.append((following, pool.submit(make, following)))
            yield step, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The NumPy generator of training step ``step`` (independent streams by ``stream``)."""
    return np.random.default_rng([int(seed), int(stream), int(step)])


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The shuffled order of ``n`` training images in ``epoch``."""
    return np.random.default_rng([int(seed), 99, int(epoch)]).permutation(n).tolist()


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> list[int]:
    """Indices of training step ``step``'s batch: epochs of shuffled orders cut into batches (last one short)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, pos = divmod(step, per_epoch)
    order = epoch_order(seed, epoch, n)
    return order[pos * batch_size : (pos + 1) * batch_size]


def fingerprint(config: Any, train: StackedTrainImages, extra: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """What must match for a checkpoint to be resumed: learning-relevant config keys and the training set."""
    data = config.model_dump() if hasattr(config, "model_dump") else dict(config)
    out = {k: repr(v) for k, v in sorted(data.items()) if k not in NON_LEARNING_KEYS}
    out["train.n"] = str(len(train))
    out["train.digest"] = train.digest()
    for key, value in (extra or {}).items():
        out[key] = repr(value)
    return out


class CheckpointStore:
    """``<directory>/checkpoint.pt``: written atomically (temporary file, fsync, rename); None = disabled."""

    def __init__(self, directory: Optional[str | Path], method: str, fingerprint: dict[str, str]) -> None:
        self.directory = Path(directory) if directory else None
        self.method = method
        self.fingerprint = fingerprint

    @property
    def path(self) -> Optional[Path]:
        return self.directory / CHECKPOINT_FILE if self.directory else None

    def load(self) -> Optional[dict[str, Any]]:
        """The stored training state, or None when there is none. A checkpoint of another run is an error."""
        path = self.path
        if path is None or not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
            raise DetectorError(f"{path}: unreadable checkpoint ({type(exc).__name__}); delete it to start over") from None
        if not isinstance(data, dict) or data.get("method") != self.method:
            raise DetectorError(f"{path}: not a {self.method} checkpoint; delete it or use another checkpoint_dir")
        stored = data.get("fingerprint", {})
        for key in sorted(set(stored) | set(self.fingerprint)):
            if stored.get(key) != self.fingerprint.get(key):
                raise DetectorError(
                    f"{path}: checkpoint is from another run ({key} = {stored.get(key)} there, "
                    f"{self.fingerprint.get(key)} here); delete it or use another checkpoint_dir"
                )
        return data

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the training state after ``step`` completed steps (atomic replace)."""
        path = self.path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"method": self.method, "fingerprint": self.fingerprint, "step": int(step), **state}
        atomic_write(path, lambda handle: torch.save(payload, handle))


def optimizer_to(state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """An optimiser state dict with its tensors moved to ``device`` (after loading a checkpoint on CPU)."""
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(move(v) for v in value)
        return value

    return move(state)
