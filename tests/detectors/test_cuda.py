"""Every registered detector on a GPU: mixed-precision training, prediction, and the model reloaded on a CPU.

Skipped without CUDA (CI has none). On a GPU machine run it with the contract on CUDA as well:
``CELL_TEST_DEVICE=cuda pytest tests/detectors/test_contract.py tests/detectors/test_cuda.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detectors import registry
from detectors.device import AUTOCAST_ENV, autocast_dtype, grad_scaler
from detectors.model_dir import load_detector
from detectors.synthetic import add_defect, synthetic_imageset, textured_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["auto", "fp16"])
@pytest.mark.parametrize("name", registry.available())
def test_mixed_precision_training_on_cuda_then_inference_on_cpu(
    name: str, precision: str, tmp_path: Path, monkeypatch
) -> None:
    # "fp16" runs the autocast + gradient-scaler path of GPUs without bf16 on any GPU.
    monkeypatch.setenv(AUTOCAST_ENV, precision)
    cls = registry.detector_class(name)
    config = {**cls.smoke_config, "device": "cuda", "mixed_precision": True}
    detector = cls(cls.config_class(**config))
    assert detector.device.type == "cuda" and autocast_dtype(detector.device) in (torch.bfloat16, torch.float16)
    if precision == "fp16":
        assert autocast_dtype(detector.device) == torch.float16 and grad_scaler(detector.device).is_enabled()
    torch.cuda.reset_peak_memory_stats()
    detector.fit(synthetic_imageset(6, size=64, seed=0))
    assert torch.cuda.max_memory_allocated() > 0  # the training ran on the GPU

    clean = textured_images(1, size=64, seed=99)[0]
    defective, _ = add_defect(clean, "patch", seed=2, scale=0.25)
    images = torch.stack([clean, defective])
    on_gpu = detector.predict(images)
    assert np.isfinite(on_gpu.score).all() and np.isfinite(on_gpu.anomaly_map).all()
    assert on_gpu.anomaly_map.dtype == np.float32 and on_gpu.anomaly_map.shape == (2, 64, 64)
    assert on_gpu.score[1] > on_gpu.score[0]

    directory = detector.save(tmp_path / "model")
    on_cpu = load_detector(directory, device="cpu")
    assert on_cpu.device.type == "cpu"
    cpu_prediction = on_cpu.predict(images)
    # Low-precision GPU inference against float32 CPU inference of the same weights: same picture.
    assert cpu_prediction.score[1] > cpu_prediction.score[0]
    correlation = np.corrcoef(cpu_prediction.anomaly_map.ravel(), on_gpu.anomaly_map.ravel())[0, 1]
    assert correlation > 0.95, f"{name}: GPU and CPU maps correlate only {correlation:.3f}"
