"""bench_sdu_comparison: the capture of its three campaigns and the --methods choice."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from acquisition.store import CaptureStore
from benchmarks.bench_sdu_comparison import capture_sets, main


def test_the_comparison_captures_training_good_and_defective_sheets_from_their_own_seeds(tmp_path: Path) -> None:
    args = argparse.Namespace(scenario="demo", camera="small", difficulty="default", train_parts=2, good_parts=1,
                              defective_parts=1, seed=7)
    capture_sets(tmp_path / "store", args)
    with CaptureStore(tmp_path / "store") as store:
        parts = {c: store.parts(campaign=c) for c in ("train", "good", "defective")}
        assert {c: len(p) for c, p in parts.items()} == {"train": 2, "good": 1, "defective": 1}
        assert {p.label for c in ("train", "good") for p in parts[c]} == {"good"}
        assert [p.label for p in parts["defective"]] == ["defective"]
        masks = store.mask_infos()
        shown = [r for r in store.captures(campaign="defective") if r.id in masks and masks[r.id].area_px > 0]
        assert shown  # the defective sheet's defect is visible in at least one view, with its mask


def test_an_unknown_method_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--methods", "simplenet,patchcore"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--methods: unknown patchcore; choose from simplenet, efficientad" in err
