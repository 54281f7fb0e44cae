"""Rich progress for long work driven by a ``progress(done, total, message)`` callback."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


#: Without a terminal (a log file, a pipe, CI) progress is a plain line per this share of the work.
PLAIN_STEP = 0.1


@contextmanager
def progress_callback(description: str, console: Optional[Console] = None) -> Iterator[Callable[[int, int, str], None]]:
    """Yield a ``(done, total, message)`` callback that drives one rich progress bar on a terminal; when the
    console is not a terminal, plain lines ``description: done/total message`` instead (the first, every
    :data:`PLAIN_STEP` of the total and the last), with no cursor movement or redraws to garble a log."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield _plain_lines(description, console)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, message="")

        def update(done: int, total: int, message: str = "") -> None:
            bar.update(task, completed=done, total=total, message=message)

        yield update


def _plain_lines(description: str, console: Console) -> Callable[[int, int, str], None]:
    last_step = [-1]

    def update(done: int, total: int, message: str = "") -> None:
        step = int(done / total / PLAIN_STEP) if total else done
        if step == last_step[0] and done != total:
            return
        last_step[0] = step
        console.print(f"{description}: {done}/{total} {message}".rstrip(), markup=False, highlight=False,
                      soft_wrap=True)

    return update
