"""TensorBoard event files beside metrics.csv (recipe key train.tensorboard, or --tensorboard).

Each row that goes into a metrics.csv also goes into the event file in the same folder, one scalar per column
(`train_loss`, `val_loss`, `val_acc`, `lr`, ...) at step = epoch, so `tensorboard --logdir runs/<run>` shows a
train run, every search trial (trials/<n>/) and a whole `dlrecipe run` side by side. Written with
torch.utils.tensorboard's SummaryWriter, which needs the `tensorboard` package (pip install "dlrecipe[tensorboard]").
"""
from __future__ import annotations

import math
from pathlib import Path

from .errors import UserError

SKIPPED = ("epoch",)  # the step, not a curve


class EventLog:
    """A SummaryWriter for one run folder, fed the rows of its metrics.csv; nothing at all when disabled."""

    def __init__(self, folder: Path | None):
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.tensorboard = true needs the tensorboard package: pip install tensorboard "
                            "(or pip install \"dlrecipe[tensorboard]\")") from None
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        step = int(row.get("epoch", 0))
        for key, value in row.items():
            if key in SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):  # a NaN (diverged) is in metrics.csv; TensorBoard would draw it as a gap anyway
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def event_log(run_dir: Path, recipe) -> EventLog:
    """The event log of a training run in `run_dir` (a no-op unless the recipe's train.tensorboard is true)."""
    return EventLog(Path(run_dir) if recipe["train.tensorboard"] else None)
