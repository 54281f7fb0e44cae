"""diagnose_efficientad: scoring one branch alone, and both branches exactly as the method scores."""
from __future__ import annotations

import numpy as np

from benchmarks.diagnose_efficientad import use_branch
from detectors.efficientad import EfficientAD, EfficientADConfig
from detectors.synthetic import synthetic_imageset, textured_images


def test_both_branches_score_as_the_method_and_each_branch_alone_differs() -> None:
    detector = EfficientAD(EfficientADConfig(**{**EfficientAD.smoke_config, "pretrained": "none", "iterations": 3}))
    detector.fit(synthetic_imageset(4, size=64, seed=0))
    images = textured_images(2, size=64, seed=3)
    method = detector.predict(images)
    use_branch(detector, "both")
    both = detector.predict(images)
    np.testing.assert_array_equal(both.score, method.score)
    np.testing.assert_array_equal(both.anomaly_map, method.anomaly_map)
    use_branch(detector, "local")
    local = detector.predict(images).anomaly_map
    use_branch(detector, "global")
    glob = detector.predict(images).anomaly_map
    np.testing.assert_allclose(0.5 * (local + glob), method.anomaly_map, rtol=1e-5, atol=1e-6)
    assert not np.allclose(local, glob)
