"""SimpleNet (Liu et al., CVPR 2023), registered as ``"simplenet"``.

``model`` holds the networks (feature aggregator, adaptor, anomalous feature generator, discriminator,
truncated L1 loss); ``detector`` the :class:`~detectors.base.Detector` glue and the training loop.
"""
from detectors.simplenet.detector import SimpleNet, SimpleNetConfig

__all__ = ["SimpleNet", "SimpleNetConfig"]
