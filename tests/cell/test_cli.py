"""The ``cell`` command line: every subcommand is reachable, and commands that need no model stay light."""
from __future__ import annotations

import importlib
import subprocess
import sys

import click

from cell.cli import COMMAND_MODULES, cli, main


def test_every_listed_module_defines_the_command_of_that_name() -> None:
    for name, module_name in COMMAND_MODULES.items():
        command = importlib.import_module(f"cell.commands.{module_name}").command
        assert isinstance(command, click.Command) and command.name == name, module_name
        assert cli.get_command(click.Context(cli), name) is command


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert f"  {name} " in out, name


def test_unknown_command_is_a_usage_error(capsys) -> None:
    assert main(["inspekt"]) == 2
    assert "No such command 'inspekt'" in capsys.readouterr().err


def test_capture_and_check_do_not_import_torch() -> None:
    # A campaign on the cell needs no detector: its CLI start must not pay for torch (seconds).
    code = (
        "import sys\nfrom cell.cli import main\n"
        "for name in ('capture', 'check', 'dataset'):\n"
        "    assert main([name, '--help']) == 0\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_help_summaries_are_the_commands_own_first_paragraphs() -> None:
    # `cell --help` prints COMMAND_SUMMARIES without importing the commands: they must not drift apart.
    import inspect

    from cell.cli import COMMAND_SUMMARIES

    assert set(COMMAND_SUMMARIES) == set(COMMAND_MODULES)
    for name, module_name in COMMAND_MODULES.items():
        command = importlib.import_module(f"cell.commands.{module_name}").command
        first = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert COMMAND_SUMMARIES[name] == first, name


def test_help_of_cell_and_of_train_and_eval_do_not_import_torch() -> None:
    # Issue 17 item 16: help must answer at once; importing torch costs seconds. A module check, not a timing.
    code = (
        "import sys\nfrom cell.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['eval', '--help']):\n"
        "    assert main(argv) == 0, argv\n"
        "print(sorted(m for m in ('torch', 'cell.commands.capture', 'cell.commands.inspect') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_usage_errors_are_one_error_line_with_exit_2(capsys) -> None:
    # Issue 17 item 14: click's three lines (Usage / Try / Error) become one `error:` line naming the command.
    for argv, expected in (
        (["capture"], "cell capture: Missing option '--cell'"),
        (["capture", "--cell", "c.yaml", "--campaign", "p.yaml", "--out", "o", "--parts", "x"], "'--parts'"),
        (["inspekt"], "No such command 'inspekt'"),
        (["train", "--bogus"], "No such option '--bogus'"),
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (argv, captured.err)
        assert "Usage:" not in captured.err and "Traceback" not in captured.err


def test_error_line_folds_newlines_and_caps_its_length() -> None:
    from cell.cli import MAX_ERROR_LINE, error_line

    line = error_line("first\nsecond " + "x" * 100_000 + " run again with --resume")
    assert line.startswith("error: first second ") and "\n" not in line
    assert len(line) == MAX_ERROR_LINE + len("error: ") and "(100037 characters, cut)" in line
    assert line.endswith("x run again with --resume")  # the advice at the end survives the cut
    assert error_line("short\n message") == "error: short message"
