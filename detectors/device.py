"""Where detectors run: device choice, mixed-precision context, and seeding of every random generator."""
from __future__ import annotations

import contextlib
import os
import random
from typing import ContextManager

import numpy as np
import torch

from detectors.errors import DetectorConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` as given.

    Raises :class:`DetectorConfigError` for an unparsable spec or a device that is not available here.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DetectorConfigError(
            f"device '{spec}' is not a device name (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DetectorConfigError(f"device '{spec}': CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DetectorConfigError(
                f"device '{spec}': only {torch.cuda.device_count()} CUDA device(s) on this machine"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DetectorConfigError(f"device '{spec}': MPS is not available on this machine")
    elif device.type != "cpu":
        raise DetectorConfigError(f"device '{spec}': unsupported device type '{device.type}'")
    return device


#: Environment variable choosing the CUDA autocast dtype: ``auto`` (default), ``bf16`` or ``fp16``.
AUTOCAST_ENV = "CELL_AUTOCAST_DTYPE"
_AUTOCAST_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype used on ``device``: on CUDA bf16 where the GPU supports it, else fp16, unless
    ``$CELL_AUTOCAST_DTYPE`` says ``bf16`` or ``fp16`` (e.g. to run the fp16 + gradient-scaler path on a GPU
    that has bf16); None on every other device. A bad value is a :class:`DetectorConfigError` naming it."""
    choice = os.environ.get(AUTOCAST_ENV, "auto").strip().lower() or "auto"
    if choice != "auto" and choice not in _AUTOCAST_CHOICES:
        raise DetectorConfigError(f"${AUTOCAST_ENV}='{choice}': use auto, bf16 or fp16")
    if device.type != "cuda":
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if choice == "bf16" and not torch.cuda.is_bf16_supported():  # torch would silently fall back to float32
        raise DetectorConfigError(f"${AUTOCAST_ENV}='bf16': this GPU has no bf16 support; use auto or fp16")
    return _AUTOCAST_CHOICES[choice]


def autocast_context(device: torch.device, enabled: bool = True) -> ContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16) when ``enabled``; a no-op context otherwise
    and on every other device.

    fp16 needs a gradient scaler when training (:func:`grad_scaler`); bf16 does not.
    """
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool = True) -> "torch.amp.GradScaler":
    """The gradient scaler that goes with :func:`autocast_context`: active only for fp16 autocast on CUDA
    (GPUs without bf16); a pass-through scaler otherwise."""
    return torch.amp.GradScaler("cuda", enabled=enabled and autocast_dtype(device) == torch.float16)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA); returns a CPU ``torch.Generator``.

    Prefer passing explicit generators (``np.random.default_rng(seed)``, the returned one) to random calls;
    this also makes code that uses the global generators (layer initialisation) reproducible.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
