"""Progress bars for calibration and verification; silent when the output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, console: Console):
        self.console = console

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yield `advance(n)`; the bar disappears when done so the report stays readable."""
        with RichProgress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda count: progress.advance(task, count)

    @contextmanager
    def status(self, description: str) -> Iterator[Callable[[str], None]]:
        """Yield `update(text)` for a long step made of many small ones (a spinner with the current one)."""
        if not self.console.is_terminal:
            yield lambda _text: None
            return
        with self.console.status(description) as status:
            yield lambda text: status.update(f"{description}: {text}")
