"""The ``cell`` command line. Subcommands live in :mod:`cell.commands`, one module each.

User mistakes and hardware faults print one line ``error: ...`` and exit non-zero; bugs still show a
traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from cell.errors import USER_ERRORS, CampaignInterrupted

#: Exit code of a run stopped by Ctrl+C or SIGTERM (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130

#: Subcommand name -> module of :mod:`cell.commands` that defines it as ``command`` (a click command or group).
#: A module is imported only when its command runs (or for its own ``--help``), so ``cell capture`` or
#: ``cell check`` do not pay for importing torch.
COMMAND_MODULES: dict[str, str] = {
    "check": "check", "capture": "capture", "dataset": "dataset", "calibrate": "calibrate", "label": "label",
    "train": "train", "eval": "evaluate", "inspect": "inspect", "demo": "demo",
    "export": "export_model",
}

#: Subcommand name -> the first paragraph of its help, shown by ``cell --help`` without importing any
#: command module (importing them all costs seconds; tests/cell/test_cli.py keeps these equal to the commands').
COMMAND_SUMMARIES: dict[str, str] = {
    "check": "Connect to the configured robot and camera, print their identity and state and a test frame.",
    "capture": "Run a capture campaign: move through the pose plan over PARTS parts and store every frame.",
    "dataset": "Inspect and export capture datasets (capture stores).",
    "calibrate": "Calibrate the camera on a cell: plan views of the board, move, capture, detect, calibrate, "
                 "write a file.",
    "label": "Label DATASET (a capture store): masks, part labels, carry-over, review. Ctrl+C stops.",
    "train": "Train a detector on good parts and choose its threshold on held-out training-side data.",
    "eval": "Evaluate a trained model on a labelled test split (no model selection, scored once).",
    "inspect": "Inspect new parts: OK / NOK / error per part, recorded in the store and signalled to the line.",
    "demo": "Capture, train, inspect and evaluate on the simulated cell.",
    "export": "Export a trained model to ONNX or OpenVINO (parity with the torch model checked before writing).",
}

#: The longest error line the CLI prints (characters): a longer message keeps its start and its end (where the
#: advice is) around a note of its length. Values inside messages are capped much shorter (cell.config.quote).
MAX_ERROR_LINE = 2000


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (commands added directly still work)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``cell --help`` from :data:`COMMAND_SUMMARIES` (no command module imported)."""
        rows = []
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            else:
                text = click.Command(name, help=COMMAND_SUMMARIES.get(name, "")).get_short_help_str(limit)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"cell.commands.{COMMAND_MODULES[cmd_name]}")
            self.add_command(module.command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="inspection-cell")
def cli() -> None:
    """Robotic acquisition-and-inspection cell: capture, label, train, evaluate, inspect."""


def error_line(message: object) -> str:
    """``error: <message>`` on one line: newlines folded, at most :data:`MAX_ERROR_LINE` characters after
    ``error: ``."""
    text = " ".join(str(message).split())
    if len(text) > MAX_ERROR_LINE:
        note = f" ... ({len(text)} characters, cut) ... "
        head = (MAX_ERROR_LINE - len(note)) * 2 // 3
        tail = MAX_ERROR_LINE - len(note) - head
        text = text[:head] + note + text[-tail:]
    return f"error: {text}"


def _usage_error_line(exc: click.UsageError) -> str:
    """A click usage error (missing or bad option, unknown command) as one line naming the command."""
    path = exc.ctx.command_path if exc.ctx is not None else "cell"
    return error_line(f"{path}: {exc.format_message()} (see '{path} --help')")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cell`` console script; returns the exit code."""
    try:
        result = cli.main(args=argv, prog_name="cell", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:
        click.echo(_usage_error_line(exc), err=True)
        return 2
    except click.ClickException as exc:
        click.echo(error_line(exc.format_message()), err=True)
        return exc.exit_code
    except CampaignInterrupted as exc:
        click.echo(error_line(exc), err=True)
        return 128 + exc.signum
    except USER_ERRORS as exc:
        click.echo(error_line(exc), err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        # Disk full, permission denied, missing file given on the command line: the environment, not a bug.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(error_line(f"{where}{exc.strerror or exc}"), err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
