"""Fingerprints of every registered detector's smoke training: the guard that a refactor changed no number.

For each registered detector, :func:`smoke_digests` trains it with its ``smoke_config`` on the contract
suite's six 64-px synthetic images (global generators scrambled first: a detector seeds itself), then
returns sha256 digests (hex) of

* ``stats.<key>``: every list- or dict-valued entry of the fit statistics (the loss histories and the other
  per-epoch / per-step series), as canonical JSON (floats written exactly);
* ``state_dict``: every tensor of ``state_dict()`` (sorted key, dtype, shape, raw bytes);
* ``predict.score`` / ``predict.anomaly_map``: ``predict``'s output on three probe images (one clean, two
  with a synthetic defect), raw float32 bytes.

CPU results can depend on the number of intra-op threads (how reductions are split), so everything runs
with :data:`THREADS` threads. The environment that decides the bits (torch / numpy / timm / scikit-image
versions, CPU architecture and the kernels torch picked for it) is recorded beside the digests.

Recording (the committed fixture ``smoke_digests.json`` beside this file was written by the code before the
detector-skeleton refactor)::

    PYTHONPATH=$PWD .venv/bin/python -m tests.detectors.smoke_digests --write

``tests/detectors/test_smoke_digests.py`` recomputes them and compares.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURE = Path(__file__).with_name("smoke_digests.json")
THREADS = 1
SIZE = 64


def environment() -> dict[str, str]:
    """What the recorded bits depend on besides the code: library versions and the CPU's kernels."""
    import skimage
    import timm

    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "timm": timm.__version__,
        "scikit-image": skimage.__version__,
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor of a state dict, in key order: key, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def probe_images() -> torch.Tensor:
    """(3, 3, 64, 64): a clean image of the training texture (not a training image) and two defective ones."""
    from detectors.synthetic import add_defect, textured_images

    clean = textured_images(1, size=SIZE, seed=99)[0]
    return torch.stack([clean, add_defect(clean, "patch", seed=3)[0], add_defect(clean, "blob", seed=5)[0]])


def _scramble_global_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def smoke_digests(name: str) -> dict[str, str]:
    """Train detector ``name`` with its smoke config (on the CPU) and digest its stats, state and predictions."""
    from detectors import registry
    from detectors.synthetic import synthetic_imageset

    cls = registry.detector_class(name)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        detector = cls(cls.config_class(**{**cls.smoke_config, "device": "cpu"}))
        _scramble_global_rngs(1234)
        stats = detector.fit(synthetic_imageset(6, size=SIZE, seed=0))
        prediction = detector.predict(probe_images())
        state = detector.state_dict()
    finally:
        torch.set_num_threads(previous_threads)
    digests = {
        f"stats.{key}": _sha256(json.dumps(value, sort_keys=True).encode())
        for key, value in sorted(stats.items())
        if isinstance(value, (list, dict))
    }
    digests["state_dict"] = state_digest(state)
    digests["predict.score"] = _sha256(np.ascontiguousarray(prediction.score).tobytes())
    digests["predict.anomaly_map"] = _sha256(np.ascontiguousarray(prediction.anomaly_map).tobytes())
    return digests


def record() -> dict[str, Any]:
    """The fixture's content: the environment and the digests of every registered detector."""
    from detectors import registry

    return {
        "environment": environment(),
        "threads": THREADS,
        "detectors": {name: smoke_digests(name) for name in registry.available()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {FIXTURE.name} (else print the digests)")
    args = parser.parse_args()
    document = record()
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if args.write:
        FIXTURE.write_text(text)
        print(f"wrote {FIXTURE}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
