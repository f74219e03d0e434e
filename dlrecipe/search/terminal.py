"""What the search prints: progress while trials run, and the leaderboard at the end."""
from __future__ import annotations

from ..display import err, fmt
from .select import SearchResult


class SearchProgress:
    """Trials done out of all slots, with the best validation value so far (stderr; nothing when quiet)."""

    def __init__(self, total: int, monitor: str, quiet: bool = False):
        self.total, self.monitor, self.quiet, self.done = total, monitor, quiet, 0
        self._shown: set[int] = set()  # trial numbers already printed (plain lines)
        self._bar = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
            self._task = self._bar.add_task("trials", total=total, info="")
            self._bar.start()

    def update(self, rows: list[dict]) -> None:
        done = self._finished(rows)
        scored = [r[f"best_{self.monitor}"] for r in done if r["state"] == "complete"]
        best = (max if self.monitor == "val_acc" else min)(scored) if scored else None
        info = f"best {self.monitor} {fmt(best)}"
        if self._bar is not None:
            self._bar.update(self._task, completed=len(done), info=info)
        elif not self.quiet:
            new = [r for r in done if r["number"] not in self._shown]
            for i, r in enumerate(new):  # each finished trial once, whatever its number (a retry's is higher)
                err.print(f"trial {len(done) - len(new) + i + 1}/{self.total}  #{r['number']} {r['stage']} "
                          f"{r['state']}  {self.monitor} {fmt(r.get(f'best_{self.monitor}'))}  {info}",
                          highlight=False)
            self._shown.update(r["number"] for r in new)
        self.done = len(done)

    @staticmethod
    def _finished(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["state"] in ("complete", "pruned", "diverged", "failed", "skipped")
                and not r["retried"]]

    def start_from(self, rows: list[dict]) -> None:
        """Trials already finished (a resumed search): counted, and said in one line rather than one each."""
        before = self.quiet
        self.quiet = True
        self.update(rows)
        self.quiet = before
        self._shown = {r["number"] for r in self._finished(rows)}
        if self.done and not self.quiet and self._bar is None:
            err.print(f"resuming: {self.done}/{self.total} trials finished before", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def short_names(keys: list[str]) -> dict[str, str]:
    """Column headers for searched keys: the last part of each dotted key ('train.lr' -> 'lr') when unique."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last)}


def leaderboard(result: SearchResult, title: str, rows: int = 10):
    """The terminal leaderboard: the best `rows` trials by the monitored metric (complete ones first); the selected
    trial is marked with * (the best fine trial, which a coarse one can beat)."""
    from rich import box
    from rich.table import Table

    s, monitor = result.summary, result.summary["monitor"]
    names = short_names(list(s["space"]))
    counts = {k: n for k, n in s["trials"].items() if k != "retried"}
    table = Table(title=f"{title}: {sum(counts.values())} trials ("
                  + ", ".join(f"{n} {k}" for k, n in s["trials"].items() if n) + "), * selected",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True)
    order = sorted((x for x in result.trials if not x["retried"]), key=lambda x: (
        x["state"] != "complete",
        -(x[f"best_{monitor}"] or 0) if monitor == "val_acc" else (x[f"best_{monitor}"] or float("inf"))))
    selected = s.get("selected_trial")
    shown = order[:rows]
    if selected is not None and all(x["number"] != selected for x in shown):  # always show the selected one
        shown = shown[:-1] + [x for x in order if x["number"] == selected]
    cells = [[f"{x['number']}{'*' if x['number'] == selected else ''}", x["stage"], *[fmt(x[k], 3) for k in names],
              fmt(x[f"best_{monitor}"]), fmt(x["epochs_run"]), x["state"]] for x in shown]  # seconds: trials.csv
    for i, col in enumerate(["#", "stage", *names.values(), monitor, "epochs", "state"]):
        header = col.replace("_", "\n")  # weight\ndecay, val\nloss: two short lines rather than a cut word
        width = max([len(row[i]) for row in cells] + [len(word) for word in header.split("\n")])
        table.add_column(header, justify="left" if col in ("stage", "state") else "right", min_width=width,
                         no_wrap=True)
    for row in cells:
        table.add_row(*row)
    return table


