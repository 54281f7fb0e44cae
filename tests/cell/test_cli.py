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
