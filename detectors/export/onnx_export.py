"""A fitted detector's whole inference path written as an ONNX graph.

The graph is :class:`detectors.inference.InferenceModule`: input ``images`` (B, 3, S, S) float32 RGB in
[0, 1] (NCHW, B dynamic, S = ``config.image_size``) -> the clamp to [0, 1], the backbone with its input
normalisation (ImageNet mean/std), the method's head, and the map post-processing of ``_score_batch``
(upsampling to S x S, Gaussian blur, image score = the method's reduction of the map) -> outputs ``scores``
(B,) and ``maps`` (B, S, S) float32.

What stays outside the graph, in the one input-preparation path every caller shares (the capture -> working
image step of the model's input spec, and tiling): decoding uint8/uint16 pixels to float, the resize of the
capture (OpenCV ``INTER_AREA``, which ONNX ``Resize`` cannot reproduce: it has no area mode, and an exported
model must score exactly what its torch twin scores on the same capture), tiling and stitching.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch >= 2.5; in torch 2.14 it is the default and needs the
``onnxscript`` package): it captures the module with ``torch.export`` (which the contract tests already check
for every detector) and handles ops the TorchScript exporter refuses (adaptive pooling with a shape computed
from the input, as TSDN's pooling has). The legacy TorchScript exporter is not used.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from detectors.export.errors import ExportError
from detectors.export.runtimes import require
from detectors.inference import InferenceModule

#: ONNX opset of exported graphs (supported by onnxruntime >= 1.18 and OpenVINO >= 2024.0).
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")
#: The largest batch the exported graph is declared for (the batch axis is dynamic in [1, MAX_BATCH]).
MAX_BATCH = 1024


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:240]}" if lines else type(exc).__name__


def _capture(module: InferenceModule, size: int) -> tuple[torch.export.ExportedProgram, Any]:
    """``torch.export`` the module with a dynamic batch axis when its code allows one, else at batch 1:
    -> (program, "batch" | 1). Some methods specialise on the batch size (e.g. a Python loop over a tensor
    dimension), which ``torch.export`` reports as a violated constraint; batch 1 is what the line scores.
    The module runs once eagerly before the capture."""
    generator = torch.Generator().manual_seed(0)
    # one eager run first: constants a method builds lazily on its first call (e.g. Glance's map weights)
    # must be built before the capture, or their construction is traced as data-dependent code
    module(torch.rand(1, 3, size, size, generator=generator))
    try:
        example = torch.rand(2, 3, size, size, generator=generator)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False), "batch"
    except Exception:
        example = torch.rand(1, 3, size, size, generator=generator)
        return torch.export.export(module, (example,), strict=False), 1


def export_onnx(detector: Any, path: str | Path, *, opset: int = OPSET) -> Any:
    """Write ``detector`` (fitted, on the CPU) as an ONNX file at ``path`` (overwritten). Input ``images``
    (B, 3, S, S) float32, outputs ``scores`` (B,), ``maps`` (B, S, S). Returns the batch axis of the graph:
    ``"batch"`` (dynamic) or ``1`` (the method's code fixes the batch size; callers score one image at a time).

    Raises :class:`~detectors.export.errors.RuntimeMissing` without ``onnx``/``onnxscript``, and an
    :class:`ExportError` with one line saying why for a detector whose path cannot be captured.
    """
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx.export with dynamo=True)")
    path = Path(path)
    name = getattr(detector, "name", type(detector).__name__)
    module = InferenceModule(detector)
    if detector.device.type != "cpu":
        raise ExportError(f"{name}: export runs on the CPU; load the model with device 'cpu' first")
    size = int(detector.config.image_size)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            program, batch = _capture(module, size)
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), optimize=True, verbose=False, report=False,
            )
            if onnx_program is None:
                raise ExportError(f"{name}: torch.onnx.export returned no program")
            onnx_program.save(str(path), external_data=False)
    except ExportError:
        raise
    except Exception as exc:  # the exporter's own errors: one line saying why
        raise ExportError(f"{name}: cannot be exported to ONNX ({_first_line(exc)})") from None
    return batch
