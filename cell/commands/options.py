"""Checks of command-line values shared by the commands (click callbacks: a bad value is a usage error)."""
from __future__ import annotations

import math
from typing import Optional

import click


def finite_threshold(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
    """``--threshold``: a score above it is NOK, so NaN (every comparison false: every part OK) and the
    infinities (every part OK / NOK) are refused, as a stored threshold.json with them is refused."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number (a score above the threshold is NOK)")
    return value
