"""Decision thresholds chosen on data carved from the training side (never on the test set).

Convention (as in :mod:`detectors.metrics`): a part is NOK when ``score > threshold``.

Policies of :func:`choose_threshold`:

* ``good_quantile``: the ``quantile`` of held-out good scores (no labelled defects needed); about
  ``1 - quantile`` of good parts are expected to be rejected.
* ``zero_miss``: the highest threshold that still catches every labelled validation defect: just below the
  lowest defect score. Its stats give the good pass rate it implies on validation (= PG0 on validation).
* ``manual``: a value given by a person; the stats still describe how it splits the validation scores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from detectors.errors import DetectorConfigError, ImageSetError
from detectors.metrics import _work_dtype, just_below

Policy = Literal["good_quantile", "zero_miss", "manual"]
POLICIES = ("good_quantile", "zero_miss", "manual")


@dataclass(frozen=True)
class ThresholdDecision:
    """A threshold ``value`` (NOK when ``score > value``), the ``policy`` that chose it and its ``stats``.

    ``stats`` (JSON-serialisable): n_good, good_mean, good_std, good_min, good_max, good_pass_rate (share of
    validation good scores <= value); with defect scores also n_defect, defect_min, defect_max,
    defect_catch_rate (share > value); the policy's parameters (quantile).
    """

    value: float
    policy: str
    stats: dict[str, Any] = field(default_factory=dict)

    def is_anomalous(self, scores: Any) -> np.ndarray:
        """(N,) bool: ``scores > value``."""
        return np.asarray(scores) > self.value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``threshold.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ThresholdDecision":
        """Inverse of :meth:`to_dict`; raises :class:`DetectorConfigError` for missing or bad keys."""
        try:
            value = float(data["value"])
            policy = str(data["policy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorConfigError(f"threshold: missing or bad key {exc}") from None
        if policy not in POLICIES or not np.isfinite(value):
            raise DetectorConfigError(f"threshold: policy {policy!r} / value {value!r} not valid")
        return cls(value=value, policy=policy, stats=dict(data.get("stats") or {}))


def _scores(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values if values is not None else [])
    if array.dtype.kind not in "fiu":
        raise DetectorConfigError(f"{what}: expected numbers, got dtype {array.dtype}")
    array = array.reshape(-1)
    if not np.isfinite(array.astype(np.float64)).all():
        raise DetectorConfigError(f"{what}: hold NaN or infinite values")
    return array


def choose_threshold(
    policy: Policy,
    good_scores: Any,
    defect_scores: Any = None,
    quantile: float = 0.99,
    manual: Optional[float] = None,
) -> ThresholdDecision:
    """Choose a decision threshold from validation scores (held-out good parts, labelled defects).

    ``good_scores`` (N,) and ``defect_scores`` (M,) are image/part scores from the training side.
    Raises :class:`ImageSetError` when the policy's data is missing (no good scores; ``zero_miss`` without
    defect scores) and :class:`DetectorConfigError` for an unknown policy or bad parameters.
    """
    if policy not in POLICIES:
        raise DetectorConfigError(f"threshold policy '{policy}' unknown; choose one of {', '.join(POLICIES)}")
    good = _scores(good_scores, "good_scores")
    defects = _scores(defect_scores, "defect_scores")
    if good.size == 0 and policy != "manual":
        raise ImageSetError(f"threshold policy '{policy}': no held-out good scores to choose from")
    params: dict[str, Any] = {}
    if policy == "good_quantile":
        if not 0.0 < float(quantile) <= 1.0:
            raise DetectorConfigError(f"threshold quantile must be in (0, 1], got {quantile}")
        value = float(np.quantile(good.astype(np.float64), float(quantile), method="linear"))
        params["quantile"] = float(quantile)
    elif policy == "zero_miss":
        if defects.size == 0:
            raise ImageSetError(
                "threshold policy 'zero_miss' needs labelled validation defects; none given "
                "(use 'good_quantile' without them)"
            )
        value = just_below(float(defects.astype(np.float64).min()), _work_dtype(defects))
    else:
        if manual is None:
            raise DetectorConfigError("threshold policy 'manual' needs a value (manual=...)")
        value = float(manual)
        if not np.isfinite(value):
            raise DetectorConfigError(f"manual threshold must be a finite number, got {manual!r}")
    return ThresholdDecision(value=value, policy=policy, stats={**params, **_stats(good, defects, value)})


def _stats(good: np.ndarray, defects: np.ndarray, value: float) -> dict[str, Any]:
    stats: dict[str, Any] = {"n_good": int(good.size)}
    if good.size:
        g = good.astype(np.float64)
        stats.update(
            good_mean=float(g.mean()),
            good_std=float(g.std()),
            good_min=float(g.min()),
            good_max=float(g.max()),
            good_pass_rate=float(np.mean(~(good > value))),
        )
    stats["n_defect"] = int(defects.size)
    if defects.size:
        d = defects.astype(np.float64)
        stats.update(
            defect_min=float(d.min()),
            defect_max=float(d.max()),
            defect_catch_rate=float(np.mean(defects > value)),
        )
    return stats
