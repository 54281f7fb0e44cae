"""State-dict checks for the methods' ``load_state_dict`` and the crash-safe file write.

The model directory itself (config, weights, input spec, thresholds, provenance) is written and read by
:mod:`detectors.model_dir` only. Here:

* :func:`atomic_write`: a file written through a temporary file beside it (flush, fsync, rename), created
  with the mode the umask gives (0644 under the usual 022), so model files, checkpoints and JSON records get
  the same modes as every other file the CLI writes;
* :func:`check_state_shapes`, :func:`check_loose_tensors`, :func:`reject_unknown_tensors`: one-line
  :class:`~detectors.errors.DetectorError` for weights (untrusted data) that do not fit a method's config.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from detectors.errors import DetectorError


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` crash-safely: ``write(handle)`` into a temporary file beside it, flush, fsync, rename.

    The temporary file is created with mode 0666 minus the umask (not ``mkstemp``'s 0600), so the result has
    the mode any new file of the process gets. On any failure the temporary file is removed and ``path``
    keeps its previous content (or stays absent). ``mode``: ``"wb"`` or ``"w"`` (UTF-8 text).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_state_shapes(
    prefix: str, module: torch.nn.Module, state: dict[str, torch.Tensor], method: str, *, source: str | None = None
) -> dict[str, torch.Tensor]:
    """The ``prefix``-ed part of ``state`` for ``module``; one-line DetectorError on a missing/extra/misshapen tensor,
    led by ``source`` (e.g. a weights file's path) or else by "<method> weights"."""
    label = source if source is not None else f"{method} weights"
    expected = module.state_dict()
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    for key, ref in expected.items():
        if key not in part:
            raise DetectorError(f"{label}: missing tensor '{prefix}{key}'")
        if tuple(part[key].shape) != tuple(ref.shape):
            raise DetectorError(
                f"{label}: tensor '{prefix}{key}' has shape {tuple(part[key].shape)}, "
                f"config expects {tuple(ref.shape)}"
            )
    extra = sorted(set(part) - set(expected))
    if extra:
        raise DetectorError(f"{label}: unexpected tensor '{prefix}{extra[0]}'")
    return part


def check_loose_tensors(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], method: str) -> None:
    """Check the tensors of ``state`` that belong to no module (e.g. normalisation statistics): each key of
    ``shapes`` must be present with exactly that shape; one-line DetectorError naming the tensor otherwise."""
    for key, shape in shapes.items():
        if key not in state:
            raise DetectorError(f"{method} weights: missing tensor '{key}'")
        if tuple(state[key].shape) != tuple(shape):
            raise DetectorError(
                f"{method} weights: tensor '{key}' has shape {tuple(state[key].shape)}, config expects {tuple(shape)}"
            )


def reject_unknown_tensors(state: dict[str, torch.Tensor], prefixes: Sequence[str], names: Sequence[str], method: str) -> None:
    """One-line DetectorError naming the first tensor of ``state`` that neither starts with one of ``prefixes``
    (the modules' tensors) nor is one of ``names`` (the loose tensors)."""
    unknown = sorted(k for k in state if k not in names and not k.startswith(tuple(prefixes)))
    if unknown:
        raise DetectorError(f"{method} weights: unexpected tensor '{unknown[0]}'")
