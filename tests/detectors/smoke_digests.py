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
with :data:`THREADS` threads. They also depend on the kernels torch and oneDNN pick for the CPU, which follow
its extensions, not only torch's capability level: on the development machine (AVX512 with AMX) every
detector's digests differ from those recorded on the first AVX512 machine. So the fixture
``smoke_digests.json`` beside this file holds one record per CPU kind (:func:`cpu_kind`: torch's capability
plus the kernel-relevant CPU flags), each with the environment that decides its bits (torch / numpy / timm /
scikit-image versions, machine, system), the CPU model (for information) and a ``recorded`` line saying
which code wrote it:

* ``"AVX512"`` (its CPU flags were not recorded): written by the code before the detector-skeleton refactor
  (issue 13 item 1, commit c01e3ac) on an AVX512 machine; there it proves the refactor changed no number. Its
  ``stale`` entries are known not to hold and are not compared until someone re-records them on such a
  machine: glance's two predict digests (changed in the last bits by the later Glance scoring speed-up, see
  the README's Glance section) and all of patchcore's (added later, commit 9295c68, from another machine).
* ``"AVX512 amx_bf16 amx_tile avx512_bf16 avx512_fp16 avx512_vnni avx_vnni"``: written on the 2-core
  development machine (Intel Xeon VM) from main at 63340f5, after the refactor, PatchCore included: a
  regression guard (any later change of a number shows up by name), not a proof about the refactor.

Recording (replaces only this machine's CPU kind's record, keeps the others; ``--recorded`` says what code
wrote it)::

    PYTHONPATH=$PWD .venv/bin/python -m tests.detectors.smoke_digests --write --recorded "main at <commit>"

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


#: CPU extensions beyond torch's capability level that change which kernels run (oneDNN's bf16 / int8 paths
#: under CPU autocast: AMX tiles, AVX512-BF16 / FP16 / VNNI), read from /proc/cpuinfo's flags.
KERNEL_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni")


def cpu_kind() -> str:
    """The fixture's record key for this machine: torch's CPU capability ("AVX512", "AVX2", "DEFAULT", ...)
    followed by the :data:`KERNEL_FLAGS` the CPU has, e.g. ``"AVX512 amx_bf16 amx_tile avx512_bf16 ..."``
    (two AVX512 CPUs with and without AMX round differently; measured: every detector's digests differ)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return " ".join([str(torch.backends.cpu.get_cpu_capability()), *sorted(flags & set(KERNEL_FLAGS))])


def cpu_model() -> str:
    """/proc/cpuinfo's model name ("" where unreadable): recorded for information, never compared."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def load_records() -> dict[str, dict[str, Any]]:
    """The fixture's records by CPU kind (empty when the file does not exist)."""
    if not FIXTURE.exists():
        return {}
    return json.loads(FIXTURE.read_text())["records"]


def record(recorded: str) -> dict[str, Any]:
    """One record for this machine: the environment, the digests of every registered detector, and
    ``recorded`` (which code wrote it, e.g. "main at 63340f5")."""
    from detectors import registry

    return {
        "environment": environment(),
        "threads": THREADS,
        "cpu_model": cpu_model(),
        "recorded": recorded,
        "detectors": {name: smoke_digests(name) for name in registry.available()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write this CPU kind's record into {FIXTURE.name} (else print it)")
    parser.add_argument("--recorded", default="", help="which code wrote the record (required with --write)")
    args = parser.parse_args()
    if args.write and not args.recorded.strip():
        parser.error("--write needs --recorded, e.g. --recorded 'main at 63340f5'")
    document = record(args.recorded.strip())
    if args.write:
        records = load_records()
        records[cpu_kind()] = document
        FIXTURE.write_text(json.dumps({"records": records}, indent=2, sort_keys=True) + "\n")
        print(f"wrote the {cpu_kind()} record of {FIXTURE}")
    else:
        print(json.dumps(document, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
