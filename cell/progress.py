"""Rich progress for long work driven by a ``progress(done, total, message)`` callback."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_callback(description: str, console: Optional[Console] = None) -> Iterator[Callable[[int, int, str], None]]:
    """Yield a ``(done, total, message)`` callback that drives one rich progress bar."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None, message="")

        def update(done: int, total: int, message: str = "") -> None:
            bar.update(task, completed=done, total=total, message=message)

        yield update
