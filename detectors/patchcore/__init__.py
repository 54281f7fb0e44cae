"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022), registered as
``"patchcore"``.

``model`` holds the maths (random projection, greedy coreset, chunked nearest neighbours, the eq. 7 image
score); ``detector`` the :class:`~detectors.base.Detector` glue. The locally aware patch features are
:class:`detectors.patch_features.FeatureAggregator`, shared with SimpleNet.
"""
from detectors.patchcore.detector import PatchCore, PatchCoreConfig, memory_bank_size

__all__ = ["PatchCore", "PatchCoreConfig", "memory_bank_size"]
