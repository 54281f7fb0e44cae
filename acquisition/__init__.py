"""Robots and cameras: protocols, real and simulated backends, pose plans, the safety envelope, the capture store.

May import :mod:`calibration`; never :mod:`cell` or :mod:`detectors`.
"""
