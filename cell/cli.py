"""The ``cell`` command line. Subcommands live in :mod:`cell.commands`, one module each.

User mistakes and hardware faults print one line ``error: ...`` and exit non-zero; bugs still show a
traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from cell.errors import USER_ERRORS

#: Modules of :mod:`cell.commands`; each defines ``command`` (a click command or group).
COMMAND_MODULES: tuple[str, ...] = ("check", "capture", "dataset", "calibrate", "label", "train", "evaluate", "inspect", "demo")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="inspection-cell")
def cli() -> None:
    """Robotic acquisition-and-inspection cell: capture, label, train, evaluate, inspect."""


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"cell.commands.{module_name}")
        cli.add_command(module.command)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cell`` console script; returns the exit code."""
    try:
        result = cli.main(args=argv, prog_name="cell", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except USER_ERRORS as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:
        # Disk full, permission denied, missing file given on the command line: the environment, not a bug.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
