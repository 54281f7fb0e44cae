"""SLSG (GPT-Net pre-training + SegNet with anomaly simulation and the SG block), registered as ``"slsg"``.

``gptnet`` = masks, GPT-Net, patch discriminator, GAN losses; ``segnet`` = SG block, SegNet, focal loss,
top-k score; ``simulation`` = structural / logical anomaly simulation; ``detector`` = the Detector glue.
"""
from detectors.slsg.detector import SLSG, SLSGConfig

__all__ = ["SLSG", "SLSGConfig"]
