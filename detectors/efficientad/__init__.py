"""EfficientAD (Batzner, Heckler and Koenig, "EfficientAD: Accurate Visual Anomaly Detection at
Millisecond-Level Latencies", WACV 2024), registered as ``"efficientad"``.

``pdn`` = the patch description networks (small, medium; the public teacher format); ``autoencoder`` = the
autoencoder; ``teacher`` = the frozen teachers (a PDN, or the offline backbone's features); ``distillation`` =
the PDN teacher distilled from those features at fit time;
``losses`` = hard feature loss, penalty, AE-input augmentation, map normalisation; ``detector`` = the
:class:`~detectors.base.Detector` glue (training loop, resumable checkpoints, scoring, state).
"""
from detectors.efficientad.detector import EfficientAD, EfficientADConfig

__all__ = ["EfficientAD", "EfficientADConfig"]
