"""All terminal output: one console for results (stdout), one for progress and messages (stderr).

Progress goes to stderr so that `--json` output on stdout stays machine-readable.
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console()                      # results: tables, verdicts, paths
err = Console(stderr=True)               # progress bars, warnings, errors


def plain(value: Any) -> str:
    """Text printed as it is: rich would read a user's value such as [mixup] as a markup tag and drop it."""
    return escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: 4 significant digits, '-' for missing; anything else as plain text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return plain(value)


class NullProgress:
    """Progress that shows nothing (--quiet, library use)."""

    def start(self, total_epochs: int, examples_per_epoch: int, title: str = "") -> None: ...
    def step(self, n: int) -> None: ...
    def epoch(self, row: dict) -> None: ...
    def close(self) -> None: ...


class PlainProgress(NullProgress):
    """One plain line per epoch, for logs and pipes."""

    def start(self, total_epochs: int, examples_per_epoch: int, title: str = "") -> None:
        self.total, self.title = total_epochs, title

    def epoch(self, row: dict) -> None:
        parts = [f"{k} {fmt(v)}" for k, v in row.items() if k not in ("epoch", "seconds")]
        err.print(f"{self.title} epoch {row['epoch']}/{self.total}  " + "  ".join(parts), highlight=False,
                  soft_wrap=True)


class RichProgress(NullProgress):
    """A rich progress bar over all epochs' examples, showing the last epoch's losses and accuracies."""

    def start(self, total_epochs: int, examples_per_epoch: int, title: str = "train") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = total_epochs
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(f"{title} epoch 1/{total_epochs}", total=total_epochs * examples_per_epoch,
                                        info="")

    def step(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def epoch(self, row: dict) -> None:
        info = "  ".join(f"{k} {fmt(v, 3)}" for k, v in row.items() if k not in ("epoch", "seconds", "lr"))
        self._bar.update(self._task, description=f"epoch {min(row['epoch'] + 1, self.total)}/{self.total}",
                         info=info)

    def close(self) -> None:
        self._bar.stop()


def make_progress(quiet: bool = False) -> NullProgress:
    if quiet:
        return NullProgress()
    return RichProgress() if err.is_terminal else PlainProgress()
