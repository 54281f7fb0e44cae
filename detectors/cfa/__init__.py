"""CFA (Lee, Lee & Song, IEEE Access 2022: Coupled-hypersphere-based Feature Adaptation), registered as ``"cfa"``.

``model`` holds the maths (multi-scale patch features, CoordConv descriptor, memory bank with k-means
compression, coupled-hypersphere loss, softmin score); ``detector`` the Detector glue and training loop;
``inputs`` the input validation and Gaussian blur shared with :mod:`detectors.glance`.
"""
from detectors.cfa.detector import CFA, CFAConfig

__all__ = ["CFA", "CFAConfig"]
