"""`cell demo` end to end with a tiny schedule: every stage runs and leaves its files."""
import json

from cell.cli import main
from detectors.simplenet.detector import SimpleNet


def test_demo_runs_capture_train_inspect_eval(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [f"--set={k}={v}" for k, v in SimpleNet.smoke_config.items()]
    code = main(["demo", "--out", str(out), "--good-parts", "4", "--inspect-parts", "4", *overrides])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "model" / "threshold.json").is_file() and (out / "model" / "part_threshold.json").is_file()
    assert "inspection: truth x verdict" in printed and "demo finished" in printed
    if (out / "report" / "metrics.json").is_file():
        metrics = json.loads((out / "report" / "metrics.json").read_text())
        assert metrics["n_images"] == 16
        assert metrics["part_level"]["n_good_parts"] + metrics["part_level"]["n_defective_parts"] == 4
        assert "part level:" in printed and "a part map: " in printed


def test_demo_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not a demo folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
