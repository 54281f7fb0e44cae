"""The ``cell`` command line. Subcommands live in :mod:`cell.commands`, one module each.

User mistakes and hardware faults print one line ``error: ...`` and exit non-zero; bugs still show a
traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from cell.errors import USER_ERRORS

#: Subcommand name -> module of :mod:`cell.commands` that defines it as ``command`` (a click command or group).
#: A module is imported only when its command runs (or for ``cell --help``), so ``cell capture`` or
#: ``cell check`` do not pay for importing torch.
COMMAND_MODULES: dict[str, str] = {
    "check": "check", "capture": "capture", "dataset": "dataset", "calibrate": "calibrate", "label": "label",
    "train": "train", "eval": "evaluate", "inspect": "inspect", "demo": "demo",
    "export": "export_model",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (commands added directly still work)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"cell.commands.{COMMAND_MODULES[cmd_name]}")
            self.add_command(module.command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="inspection-cell")
def cli() -> None:
    """Robotic acquisition-and-inspection cell: capture, label, train, evaluate, inspect."""


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
