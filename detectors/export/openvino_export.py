"""A fitted detector as an OpenVINO IR (``model.xml`` + ``model.bin``), converted from its ONNX graph.

The ONNX graph of :func:`detectors.export.onnx_export.export_onnx` (the same inputs, outputs and in-graph
steps) is converted with ``openvino.convert_model`` and saved with ``compress_to_fp16=False``: the IR keeps
float32 weights (``save_model``'s default would halve them to float16 and change the scores).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from detectors.export.errors import ExportError
from detectors.export.onnx_export import OPSET, _first_line, export_onnx
from detectors.export.runtimes import require

XML_FILE = "model.xml"
BIN_FILE = "model.bin"


def export_openvino(
    detector: Any, directory: str | Path, *, opset: int = OPSET, onnx_file: Optional[str | Path] = None
) -> Any:
    """Write ``detector`` as ``directory/model.xml`` + ``model.bin`` (``directory`` must exist); returns the
    graph's batch axis as :func:`export_onnx` (``"batch"`` or ``1``; for ``onnx_file``, read from the file). ``onnx_file``: an ONNX export of this same detector to convert instead of exporting again (the
    ONNX translation is the slow step). Raises :class:`RuntimeMissing` without ``openvino`` (or the ONNX
    exporter's packages), and :class:`ExportError` with one line for a model that cannot be exported or
    converted."""
    ov = require("openvino", "OpenVINO export")
    directory = Path(directory)
    name = getattr(detector, "name", type(detector).__name__)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=directory) as scratch:
        if onnx_file is None:
            onnx_path = Path(scratch) / "model.onnx"
            batch = export_onnx(detector, onnx_path, opset=opset)
        else:
            onnx_path, batch = Path(onnx_file), onnx_batch_axis(onnx_file)
        try:
            model = ov.convert_model(str(onnx_path))
            xml = directory / XML_FILE
            ov.save_model(model, str(xml), compress_to_fp16=False)
        except Exception as exc:
            raise ExportError(f"{name}: the ONNX graph does not convert to OpenVINO ({_first_line(exc)})") from None
    return batch


def onnx_batch_axis(onnx_file: str | Path) -> Any:
    """The batch axis of an exported ONNX graph's input: ``"batch"`` (symbolic) or its fixed size."""
    onnx = require("onnx", "reading an ONNX graph")
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    return "batch" if dim.dim_param else int(dim.dim_value)
