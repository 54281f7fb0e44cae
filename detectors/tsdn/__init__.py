"""TSDN (two-stream decoder network, superpixel random filling), registered as ``"tsdn"``.

``surf`` = superpixel random filling; ``model`` = networks and losses; ``training`` = input checks and
resumable checkpoints (shared with SLSG); ``detector`` = the :class:`~detectors.base.Detector` glue.
"""
from detectors.tsdn.detector import TSDN, TSDNConfig

__all__ = ["TSDN", "TSDNConfig"]
