"""Progress output: a bar on a terminal, clean plain lines in a log or a pipe (issue 17 item 18)."""
from __future__ import annotations

import io

from rich.console import Console

from cell.progress import progress_callback


def test_progress_without_a_terminal_is_a_few_plain_lines():
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=False)
    with progress_callback("training", console) as progress:
        for done in range(1, 201):
            progress(done, 200, f"epoch {done} loss [0.5]")
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b" not in text and "\r" not in text
    assert lines[0] == "training: 1/200 epoch 1 loss [0.5]" and lines[-1] == "training: 200/200 epoch 200 loss [0.5]"
    assert 10 <= len(lines) <= 12
    assert all(line.startswith("training: ") for line in lines)


def test_progress_on_a_terminal_draws_a_bar():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    with progress_callback("training", console) as progress:
        progress(1, 2, "half")
    assert "\x1b" in out.getvalue()
