"""A training progress callback that stops a run part-way, for the resumable-training tests (TSDN, EfficientAD)."""
from __future__ import annotations


class InterruptingProgress:
    """progress callback that raises KeyboardInterrupt once ``at`` steps are done; records what it saw."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.seen = at, []

    def __call__(self, done: int, total: int, message: str) -> None:
        self.seen.append((done, message))
        if self.at is not None and done >= self.at:
            raise KeyboardInterrupt
