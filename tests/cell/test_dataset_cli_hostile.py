"""`cell dataset` and training's data loading on damaged and read-only stores (issue 17, items 3 and 4):
a wiped manifest is one `error:` line and exit 2 (never "verify: ok, 0 images", never a new manifest), and a
store on a read-only mount is read by info, export and the training loader."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from cell.cli import cli, main
from cell.commands import dataset
from tests.acquisition.test_store import _labelled_store
from tests.acquisition.test_store_hostile import _tree_digest, _wipe, read_only_mount_runner

if "dataset" not in cli.commands:
    cli.add_command(dataset.command)


@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    with _labelled_store(root):
        pass
    return root


@pytest.mark.parametrize("how, message", [("empty", "is empty (0 bytes)"), ("missing", "manifest is missing")])
@pytest.mark.parametrize("argv", [["dataset", "info"], ["dataset", "info", "--json"], ["dataset", "export"]])
def test_a_wiped_manifest_is_one_error_line_and_no_new_manifest(store_root, tmp_path, capsys, how, message, argv):
    _wipe(store_root, how)
    before = _tree_digest(store_root)
    args = argv + [str(store_root)] + (["--mvtec", str(tmp_path / "mv")] if argv[1] == "export" else [])
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert "verify: ok" not in captured.out
    assert _tree_digest(store_root) == before  # nothing created or rewritten
    assert not (tmp_path / "mv").exists()


def test_a_folder_with_only_store_json_is_an_error(store_root, capsys):
    for path in list(store_root.iterdir()):
        if path.name != "store.json":
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink()
    assert main(["dataset", "info", str(store_root)]) == 2
    assert "manifest is missing" in capsys.readouterr().err
    assert sorted(p.name for p in store_root.iterdir()) == ["store.json"]


def test_info_export_and_the_training_loader_read_a_store_on_a_read_only_mount(store_root, tmp_path):
    runner = read_only_mount_runner(store_root)
    if isinstance(runner, str):
        pytest.skip(runner)
    cli_code = "import sys\nfrom cell.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = runner([sys.executable, "-c", cli_code, "dataset", "info", str(store_root), "--json"])
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["captures"] == 15 and facts["verify"]["ok"] is True
    out = tmp_path / "mv"
    result = runner([sys.executable, "-c", cli_code, "dataset", "export", str(store_root), "--mvtec", str(out)])
    assert result.returncode == 0, result.stderr
    assert (out / "export.json").is_file() and any((out / "train" / "good").iterdir())
    loader = textwrap.dedent(f"""
        from cell.datasets import open_images
        with open_images({str(store_root)!r}, "train") as items:
            print(len(items), items[0].load().shape, sum(1 for i in items if i.label == 1))
    """)
    result = runner([sys.executable, "-c", loader])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:1] == ["13"]  # 10 good + 3 defective-part poses with a mask row


def test_a_malformed_manifest_row_is_one_error_line(store_root, capsys):
    import sqlite3

    conn = sqlite3.connect(store_root / "manifest.sqlite")
    with conn:
        conn.execute("UPDATE captures SET joints = '[1, 2' WHERE id = 3")
    conn.close()
    assert main(["dataset", "info", str(store_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "manifest row of capture 3 is damaged" in err[0]
