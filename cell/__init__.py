"""The application: CLI, config loading, campaigns, the inspection loop, the labelling app, reports.

The composition root: the only package that knows :mod:`acquisition`, :mod:`calibration` and
:mod:`detectors` together.
"""
