"""Run folders: `runs/<YYYYmmdd-HHMMSS>-<name>-<command>/`, never overwritten, with flat logs pandas can read.

Every command writes `recipe.toml` (resolved), `env.json`, `summary.json` and its own CSV files here. CSV rows are
flushed as they are written, so a killed run keeps every finished row; JSON files are replaced atomically.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from .atomic import inside
from .errors import UserError


def resolve_device(name: str = "auto") -> str:
    """auto -> "cuda" when a GPU is visible, else "cpu"; "cuda" without a GPU is a usage error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch (allowed: auto, cpu, cuda)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r} is unknown: allowed auto, cpu, cuda")
    return name


def slug(name: str) -> str:
    """A run name as a safe folder-name part: letters, digits, '.', '_' and '-' only, no leading dots (a recipe is a
    shared file: its name must not choose where dlrecipe writes, e.g. name = "../../escaped")."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return re.sub(r"\.{2,}", ".", out)[:80] or "run"


def check_runs_dir(runs_dir: str | Path) -> Path:
    """--runs-dir must be a folder (or not exist yet)."""
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"--runs-dir {str(root)!r} is a file: expected a folder (created when missing)")
    return root


def new_run_dir(runs_dir: str | Path, name: str, command: str) -> Path:
    """Create a fresh folder for one run; a second run in the same second gets a -2, -3, ... suffix."""
    root = check_runs_dir(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slug(name)}-{command}"
    for i in range(1, 1000):
        path = root / (base if i == 1 else f"{base}-{i}")
        inside(root, path)  # slug() already keeps separators and '..' out: checked again where the folder is made
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:  # a read-only or full disk, a path through a file
            raise UserError(f"cannot create a run folder under {root}: {e.strerror or e}") from None
    raise UserError(f"cannot create a run folder under {root}: too many runs named {base}")


def _clean(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically and synced (a reader or a crash never sees half a file; a full disk is one line)."""
    from .atomic import replace

    text = json.dumps(_clean(obj), indent=2, default=str) + "\n"
    replace(Path(path), lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_json_or_refuse(path: Path) -> dict:
    """A JSON object a command needs (summary.json, search.json), or a one-line UserError naming the file."""
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:  # truncated, binary, a folder: UnicodeDecodeError is a ValueError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise UserError(f"{path}: cannot read it as JSON ({reason}); restore or delete that file") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a JSON {type(obj).__name__}, expected an object; restore or delete that file")
    return obj


def redact(text: str) -> str:
    """A storage URL's password as ***: postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", str(text))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             check=False)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(device: str, seed: int) -> dict[str, Any]:
    """Versions, device, seed, git commit: what it takes to reproduce a run."""
    import numpy
    import torch

    from . import __version__

    env = {
        "dlrecipe": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "device": device, "seed": seed,
        "torch_threads": torch.get_num_threads(), "git_commit": _git_commit(), "argv": [redact(a) for a in sys.argv],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


@contextmanager
def marks_interrupted(run_dir: Path | None, name: str, command: str):
    """For a command that writes its results only at the end (sanity, lr-find): Ctrl-C inside the block writes a
    summary.json with status "interrupted", so `dlrecipe runs` does not list the folder as running, then raises
    Interrupted with a one-line message."""
    from .errors import Interrupted

    try:
        yield
    except Interrupted:
        raise
    except Exception as e:  # a crash is recorded as failed with its reason, never left "running or killed"
        if run_dir is not None:
            write_json(run_dir / "summary.json", failed_summary(name, command, e))
        raise
    except KeyboardInterrupt:
        reason = (f"interrupted (Ctrl-C): {command} writes its results when it finishes, so nothing was measured "
                  f"to keep; run it again")
        if run_dir is not None:
            write_json(run_dir / "summary.json", {"name": name, "command": command, "status": "interrupted",
                                                  "reason": reason, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
            reason += f" (run folder {run_dir})"
        raise Interrupted(reason) from None


def failed_summary(name: str, command: str, e: BaseException) -> dict[str, Any]:
    """summary.json of a run that ended with an exception: status failed, the reason in one line."""
    from .sanity.preflight import exception_words, user_frame

    text = str(e).strip().splitlines()
    where = user_frame(e)
    reason = (text[0] if isinstance(e, UserError) and text else
              exception_words(e) + (f" (at {where})" if where else ""))
    return {"name": name, "command": command, "status": "failed", "reason": reason,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


STARTED: list[Path] = []  # run folders this process started: the CLI marks those a crash left running as failed


def mark_unfinished_failed(e: BaseException) -> list[Path]:
    """Write a failed summary.json into each run folder in STARTED that has none or one still 'running'."""
    marked = []
    for run_dir in STARTED:
        path = run_dir / "summary.json"
        try:
            summary = read_json(path) if path.is_file() else {}
            if run_dir.is_dir() and summary.get("status", "running") == "running":
                stem = run_dir.name.split("-", 2)[-1]  # <date>-<time>-<name>-<command>
                command = summary.get("command") or stem.rsplit("-", 1)[-1]
                name = summary.get("name") or stem.rsplit("-", 1)[0]
                write_json(path, {**summary, **failed_summary(name, command, e)})
                marked.append(run_dir)
        except (OSError, ValueError, UserError):
            continue  # a folder removed or unreadable meanwhile, or a full disk: nothing to mark
    STARTED.clear()
    return marked


def start_run(recipe, runs_dir: str | Path, command: str, device: str, folder: str | None = None) -> Path:
    """A new run folder holding the resolved recipe and the environment.

    folder: use exactly runs_dir/folder (a step of `dlrecipe run`, e.g. "2-lr-find"), which must not exist yet.
    """
    if folder is None:
        run_dir = new_run_dir(runs_dir, recipe.name, command)
    else:
        run_dir = inside(Path(runs_dir), Path(runs_dir) / folder)
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise UserError(f"{run_dir} exists already: a run folder is never overwritten") from None
    (run_dir / "recipe.toml").write_text(recipe.to_toml())
    write_json(run_dir / "env.json", environment(device, recipe["seed"]))
    STARTED.append(run_dir)
    return run_dir


class CsvLog:
    """Append rows to a CSV file, flushing each one; the header comes from the first row's keys."""

    def __init__(self, path: Path, columns: Iterable[str] | None = None):
        self.path, self.columns = Path(path), list(columns) if columns else None
        self._file = None
        self._writer = None
        self.rows = 0  # rows flushed so far

    def write(self, row: dict[str, Any]) -> None:
        try:
            if self._writer is None:
                self.columns = self.columns or list(row)
                self._file = self.path.open("w", newline="")
                self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
                self._writer.writeheader()
            self._writer.writerow(row)
            self._file.flush()
            self.rows += 1
        except OSError as e:  # a full disk or a removed folder: one line; the rows flushed before are intact
            raise UserError(f"cannot write {self.path}: {e.strerror or e}; the {self.rows} rows written before "
                            f"are intact") from None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the failed flush was reported by write()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def status_shown(summary: dict) -> str:
    """A run's status as listed: a run without a summary, or still marked running, may have been killed."""
    status = summary.get("status", "running")
    return "running or killed" if status == "running" else status


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per run folder under runs_dir (newest first), from its summary.json and recipe name."""
    root = Path(runs_dir)
    rows = []
    check_runs_dir(root)
    for d in sorted(root.glob("*/"), reverse=True):
        summary_path = d / "summary.json"
        try:
            summary = read_json(summary_path) if summary_path.exists() else {}  # a folder there: unreadable
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
            if not summary and not re.match(r"\d{8}-\d{6}-", d.name) and not (d / "recipe.toml").is_file():
                raise ValueError("not a dlrecipe run folder (no summary.json, recipe.toml or env.json)")
        except (OSError, ValueError) as e:  # a truncated or foreign file: listed as such, never a crash
            summary = {"status": "unreadable", "reason": f"summary.json: {e}"}
        except UserError as e:
            summary = {"status": "unreadable", "reason": str(e)}
        rows.append({
            "run": d.name, "name": summary.get("name", "?"), "command": summary.get("command", "?"),
            "status": status_shown(summary),
            "best_val": summary.get("best_val_acc", summary.get("best_val_loss")),
            "test": summary.get("test_acc", summary.get("test_loss")),
            "metric": "acc" if "best_val_acc" in summary or "test_acc" in summary else "loss",  # regression: loss
            "date": summary.get("finished", ""), "path": str(d),
        })
    return rows
