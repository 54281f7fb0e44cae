"""Every registered detector trains and scores bit for bit as the recorded code did (see smoke_digests.py).

The fixture was recorded before the detector-skeleton refactor; a change of any loss history, weight or
predicted number shows up here by name. It is skipped (with the reason) where the environment that decides
the bits differs from the recorded one; re-record there with ``python -m tests.detectors.smoke_digests
--write`` only for a deliberate change of the numbers.
"""
from __future__ import annotations

import json

import pytest

from detectors import registry
from tests.detectors.smoke_digests import FIXTURE, environment, smoke_digests

RECORDED = json.loads(FIXTURE.read_text())


def test_every_registered_detector_has_recorded_digests() -> None:
    assert sorted(RECORDED["detectors"]) == registry.available()


@pytest.mark.parametrize("name", sorted(RECORDED["detectors"]))
def test_smoke_training_is_bit_identical(name: str) -> None:
    here = environment()
    differs = {k: (v, here.get(k)) for k, v in RECORDED["environment"].items() if here.get(k) != v}
    if differs:
        pytest.skip(f"recorded in another environment (recorded, here): {differs}")
    expected = RECORDED["detectors"][name]
    actual = smoke_digests(name)
    changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    assert not changed, f"{name}: digests changed for {changed}"
