"""Glancing at the Patch (Wang, Wu, Cui & Shen, CVPR 2021), registered as ``"glance"``.

``model`` holds the networks and maths (Local-Net, partial-convolution Global-Net, IAD score, DAD head,
stains, patch raster, inverse-distance weighting); ``detector`` the Detector glue and the two training stages.
"""
from detectors.glance.detector import Glance, GlanceConfig

__all__ = ["Glance", "GlanceConfig"]
