"""Generated bad values at every config loader (issue 17): cell, campaign, detector, demo, calibration config,
calibration file, board spec.

Two properties:

- a loader given a mutated copy of a shipped file either loads it or raises its package's one error type
  with a one-line message naming the file: never another exception (a traceback at the CLI), never a write;
- the CLI given a file that is surely bad (an unknown key, a value of the wrong shape, broken YAML,
  a duplicate key, an alias bomb, a non-mapping, bytes that are not UTF-8) prints one ``error:`` line,
  exits 2, and creates nothing.

Run with ``--hypothesis-show-statistics`` to see how many cases each property ran.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration.errors import CalibrationError
from cell.cli import MAX_ERROR_LINE, main
from cell.errors import ConfigFileError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SIM_CELL = CONFIGS / "cells" / "sim.yaml"
DEMO_CAMPAIGN = CONFIGS / "campaigns" / "demo.yaml"

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI_PROPERTY = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the loaders and the valid files they are given ------------------------------------------------------

def _calibration_file_text() -> str:
    from calibration.calibration_file import save_calibration
    from tests.calibration.test_calibration_file import _calibration

    with tempfile.TemporaryDirectory() as folder:
        return save_calibration(_calibration(), Path(folder) / "calib.yaml").read_text(encoding="utf-8")


def _load_cell(path: Path) -> Any:
    from cell.cell_factory import load_cell_config

    return load_cell_config(path)


def _load_campaign(path: Path) -> Any:
    from cell.cell_factory import load_campaign_file

    return load_campaign_file(path)


def _load_detector(path: Path) -> Any:
    from cell.training import load_train_config

    return load_train_config(path)


def _load_demo(path: Path) -> Any:
    from cell.commands.demo import DemoConfig
    from cell.config import load_config

    return load_config(path, DemoConfig)


def _load_calibration_config(path: Path) -> Any:
    from cell.calibrate import CalibrationConfig
    from cell.config import load_config

    return load_config(path, CalibrationConfig)


def _load_calibration_file(path: Path) -> Any:
    from calibration.calibration_file import load_calibration

    return load_calibration(path, expected_serial="SIM00001")


def _load_board_spec(path: Path) -> Any:
    from calibration.charuco import load_board_spec

    return load_board_spec(path)


#: loader name -> (the loader, the text of a valid file, the one exception type it may raise)
LOADERS: dict[str, tuple[Callable[[Path], Any], Callable[[], str], type[Exception]]] = {
    "cell-sim": (_load_cell, lambda: SIM_CELL.read_text(encoding="utf-8"), ConfigFileError),
    "cell-ur5": (_load_cell, lambda: (CONFIGS / "cells" / "ur5.yaml").read_text(encoding="utf-8"), ConfigFileError),
    "campaign": (_load_campaign, lambda: DEMO_CAMPAIGN.read_text(encoding="utf-8"), ConfigFileError),
    "detector": (_load_detector, lambda: (CONFIGS / "detectors" / "simplenet.yaml").read_text(encoding="utf-8"),
                 ConfigFileError),
    "demo": (_load_demo, lambda: (CONFIGS / "demo.yaml").read_text(encoding="utf-8"), ConfigFileError),
    "calibration-config": (_load_calibration_config,
                           lambda: (CONFIGS / "calibration" / "charuco.yaml").read_text(encoding="utf-8"),
                           ConfigFileError),
    "calibration-file": (_load_calibration_file, _calibration_file_text, CalibrationError),
    "board-spec": (_load_board_spec, lambda: (CONFIGS / "calibration" / "charuco.yaml").read_text(encoding="utf-8"),
                   CalibrationError),
}


# --- generated bad input ---------------------------------------------------------------------------------

BAD_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=5)), max_size=9),
    st.dictionaries(st.text(min_size=1, max_size=6), st.integers(), min_size=1, max_size=3),
)


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and list indexes) to a value in a parsed document."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths_of(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths_of(value, prefix + (index,))
    return found


def parent_and_key(document: Any, path: tuple) -> tuple[Any, Any]:
    node = document
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


def alias_bomb(levels: int) -> str:
    rows = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        rows.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(rows) + "\n"


@st.composite
def surely_bad_text(draw: Any, valid: str) -> bytes:
    """A file that no loader may accept (whatever the schema): the bytes to write."""
    document = yaml.safe_load(valid)
    kind = draw(st.sampled_from(["unknown-key", "wrong-shape", "broken-yaml", "duplicate-key", "alias-bomb",
                                 "not-a-mapping", "not-utf8", "deep-nesting"]))
    if kind == "unknown-key":
        document[draw(st.from_regex(r"zz_[a-z]{1,8}", fullmatch=True))] = draw(BAD_VALUES)
        return yaml.safe_dump(document).encode()
    if kind == "wrong-shape":
        # a top-level key's value replaced by something of another shape than it had (mapping <-> scalar)
        key = draw(st.sampled_from(sorted(document)))
        was_mapping = isinstance(document[key], dict)
        document[key] = (draw(st.lists(st.integers(), min_size=2, max_size=4)) if was_mapping
                         else {"zz": draw(st.lists(st.integers(), max_size=3))})
        return yaml.safe_dump(document).encode()
    if kind == "broken-yaml":
        junk = draw(st.sampled_from(["key: [1, 2\n", "key: {a: 1\n", "\tkey: 1\n", "key: 'open\n", ": :\n",
                                     "- a\nb: 1\n", "&anchor\n", "key: *nowhere\n"]))
        return (valid + "\n" + junk).encode()
    if kind == "duplicate-key":
        key = draw(st.sampled_from(sorted(document)))
        return (valid + "\n" + yaml.safe_dump({key: document[key]})).encode()
    if kind == "alias-bomb":
        return (alias_bomb(draw(st.integers(min_value=6, max_value=9)))).encode()
    if kind == "not-a-mapping":
        return yaml.safe_dump(draw(st.one_of(st.lists(st.integers(), max_size=3), st.text(min_size=1, max_size=10),
                                             st.integers()))).encode()
    if kind == "not-utf8":
        return valid.encode() + b"\nname: \xff\xfe\xfa\n"
    depth = draw(st.integers(min_value=200, max_value=3000))
    return (f"{sorted(document)[0]}: " + "[" * depth + "]" * depth + "\n").encode()


@st.composite
def mutated_text(draw: Any, valid: str) -> bytes:
    """A file that may or may not be valid: a value replaced, a key deleted, or a surely bad file."""
    document = yaml.safe_load(valid)
    kind = draw(st.sampled_from(["replace", "replace", "delete", "surely-bad"]))
    if kind == "surely-bad":
        return draw(surely_bad_text(valid))
    paths = paths_of(document)
    path = draw(st.sampled_from(paths))
    document = copy.deepcopy(document)
    parent, key = parent_and_key(document, path)
    if kind == "delete":
        del parent[key]
    else:
        parent[key] = draw(BAD_VALUES)
    return yaml.safe_dump(document, allow_unicode=True).encode()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- property 1: every loader, mutated files ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_gives_one_clear_error_or_a_config(name):
    loader, valid_text, error_type = LOADERS[name]
    valid = valid_text()

    @PROPERTY
    @given(data=mutated_text(valid))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yaml"
            path.write_bytes(data)
            before = listing(Path(folder))
            try:
                loader(path)
            except error_type as exc:
                message = str(exc)
                assert message and "\n" not in message, message
                assert str(path) in message, message
            assert listing(Path(folder)) == before  # a loader never writes

    check()


# --- property 2: the CLI on surely bad files ------------------------------------------------------------

def cli_cases(folder: Path, bad: Path) -> dict[str, tuple[list[str], Path]]:
    """config kind -> (argv that reads ``bad`` as that kind of file first, the output it must not create)."""
    store = folder / "store"
    tight = folder / "tight-cell.yaml"  # whatever the calibration file says, this cell's plan is refused
    cell = yaml.safe_load(SIM_CELL.read_text(encoding="utf-8"))
    cell["envelope"] = {"workspace_min": [-0.01, -0.01, 0.6], "workspace_max": [0.01, 0.01, 0.7]}
    tight.write_text(yaml.safe_dump(cell), encoding="utf-8")
    capture = ["capture", "--parts", "1", "--out", str(store)]
    return {
        "cell": ([*capture, "--cell", str(bad), "--campaign", str(DEMO_CAMPAIGN)], store),
        "campaign": ([*capture, "--cell", str(SIM_CELL), "--campaign", str(bad)], store),
        "detector": (["train", "--detector", str(bad), "--data", str(folder / "data"), "--out", str(folder / "model")],
                     folder / "model"),
        "demo": (["demo", "--config", str(bad), "--out", str(folder / "demo")], folder / "demo"),
        "calibration-config": (["calibrate", "board", "--config", str(bad), "--out", str(folder / "board.pdf")],
                               folder / "board.pdf"),
        "calibration-file": ([*capture, "--cell", str(tight), "--campaign", str(DEMO_CAMPAIGN), "--calibration",
                              str(bad)], store),
    }


CLI_VALID = {
    "cell": lambda: SIM_CELL.read_text(encoding="utf-8"),
    "campaign": lambda: DEMO_CAMPAIGN.read_text(encoding="utf-8"),
    "detector": lambda: (CONFIGS / "detectors" / "simplenet.yaml").read_text(encoding="utf-8"),
    "demo": lambda: (CONFIGS / "demo.yaml").read_text(encoding="utf-8"),
    "calibration-config": lambda: (CONFIGS / "calibration" / "charuco.yaml").read_text(encoding="utf-8"),
    "calibration-file": _calibration_file_text,
}


@pytest.mark.parametrize("kind", sorted(CLI_VALID))
def test_the_cli_prints_one_error_line_and_creates_nothing(kind, capsys):
    valid = CLI_VALID[kind]()

    @CLI_PROPERTY
    @given(data=surely_bad_text(valid))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            bad = folder / "bad.yaml"
            bad.write_bytes(data)
            argv, output = cli_cases(folder, bad)[kind]
            before = listing(folder)
            capsys.readouterr()
            code = main(argv)
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if line.strip()]
            assert code == 2, err
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert len(lines[0]) <= MAX_ERROR_LINE + len("error: ")
            assert not output.exists()
            assert listing(folder) == before

    check()

