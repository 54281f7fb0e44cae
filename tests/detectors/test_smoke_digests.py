"""Every registered detector trains and scores bit for bit as the recorded code did (see smoke_digests.py).

The fixture holds one record per CPU kind (torch's capability plus the CPU flags that change oneDNN's
kernels, e.g. AMX), because the kernels decide the last bits. The plain "AVX512" record was written by the
code before the detector-skeleton refactor (on its machine this test proves the refactor changed no number);
the "AVX512 amx_bf16 ..." record was written on the 2-core development machine (Intel Xeon VM) from main at
63340f5, after the refactor, PatchCore included (there it is a regression guard: a change of any loss
history, weight or predicted number shows up by name). Where no record matches this machine's CPU kind, or
the record's library versions differ from the installed ones, the test is skipped with the reason; a
record's ``stale`` entries (known out of date, listed in the fixture) are not compared. Re-record with
``python -m tests.detectors.smoke_digests --write --recorded "..."`` only for a deliberate change of the
numbers.
"""
from __future__ import annotations

from typing import Any

import pytest

from detectors import registry
from tests.detectors.smoke_digests import cpu_kind, environment, load_records, smoke_digests

RECORDS = load_records()


def _record_here() -> dict[str, Any]:
    """This machine's record; skips when there is none or its environment differs from this one."""
    kind = cpu_kind()
    if kind not in RECORDS:
        pytest.skip(f"no smoke digests recorded for CPU kind {kind!r} (recorded: {sorted(RECORDS)})")
    record = RECORDS[kind]
    here = environment()
    differs = {k: (v, here.get(k)) for k, v in record["environment"].items() if here.get(k) != v}
    if differs:
        pytest.skip(f"{kind} digests recorded in another environment (recorded, here): {differs}")
    return record


def test_every_record_is_keyed_by_its_own_cpu_kind() -> None:
    assert RECORDS, "smoke_digests.json holds no record"
    for kind, record in RECORDS.items():
        assert record["environment"]["cpu_capability"] == kind.split()[0]
        assert set(record.get("stale", {})) <= set(record["detectors"])


def test_every_registered_detector_has_recorded_digests() -> None:
    assert sorted(_record_here()["detectors"]) == registry.available()


@pytest.mark.parametrize("name", registry.available())
def test_smoke_training_is_bit_identical(name: str) -> None:
    record = _record_here()
    if name not in record["detectors"]:
        pytest.fail(f"{name}: no digests in the {cpu_kind()} record: record them (smoke_digests --write)")
    expected = record["detectors"][name]
    stale = set(record.get("stale", {}).get(name, []))
    if not set(expected) - stale:
        pytest.skip(f"{name}: every digest of the {cpu_kind()} record is marked stale: re-record it on such a CPU")
    actual = smoke_digests(name)
    changed = sorted(k for k in set(expected) | set(actual) if k not in stale and expected.get(k) != actual.get(k))
    assert not changed, f"{name}: digests changed for {changed}"
