"""The contract with pipelines: one exit-code table for every command, and the `--json` result object.

Every command that runs something ends in a `Result`: the command's own summary.json fields, plus the dlrecipe
version, the command, the run folder, the exit code and `metrics` (the summary's numbers). `--json` prints it as
one JSON object on stdout, also on error (`{"status": "error", "error": ...}`, exit 2); the shape is the JSON
Schema in dlrecipe/schema/result.schema.json. The Python API returns the same `Result`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__

OK, FAILED, BAD_INPUT, INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = {  # the README's table and `dlrecipe --help` read this
    OK: "ok: the check passed, the run completed (early stopping included)",
    FAILED: "the check or run failed: a failed sanity check (a warning too with --strict), a diverged or failed "
            "run (train --smoke included), a search or run that found no model, an lr-find where every probe "
            "diverged",
    BAD_INPUT: "bad input: usage, recipe, data or model error (one line on stderr; with --json also on stdout)",
    INTERRUPTED: "interrupted (Ctrl-C): what finished is kept in the run folder",
}
COMMANDS = ("train", "sanity", "lr-find", "search", "run", "pretrain", "predict", "report", "validate")
SCHEMA_PATH = Path(__file__).parent / "schema" / "result.schema.json"


def exit_code(command: str, status: str, *, strict: bool = False) -> int:
    """The exit code of a finished command from its status, the same rule for every command."""
    if status == "interrupted":
        return INTERRUPTED
    if status == "error":
        return BAD_INPUT
    if command == "sanity":
        return FAILED if status == "fail" or (strict and status == "warn") else OK
    if command == "lr-find":
        return FAILED if status == "all_diverged" else OK
    if command == "train":
        return OK if status in ("completed", "early_stopped", "stopped") else FAILED
    if command in ("search", "run", "pretrain"):
        return OK if status == "completed" else FAILED
    return OK  # predict, report, validate: they either finish or raise (exit 2)


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/Inf as null, paths and other objects as text."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _clean(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Result:
    """What a command produced: `status`, `exit_code`, `run_dir`, `summary` (summary.json's fields, also readable
    as attributes: `result.test_acc`) and `detail` (the library's own result object, with curves and tables)."""

    command: str
    status: str
    run_dir: Path | None
    summary: dict = field(default_factory=dict)
    exit_code: int = OK
    detail: Any = None

    def __getattr__(self, name: str) -> Any:
        summary = self.__dict__.get("summary") or {}
        if name in summary:
            return summary[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('command')!r} has no field {name!r}; "
                             f"fields: {', '.join(sorted(summary))}")

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    @property
    def metrics(self) -> dict[str, float | None]:
        """The summary's top-level numbers (best_val_loss, test_acc, recommended_lr, seconds, ...)."""
        return {k: (v if math.isfinite(v) else None) for k, v in self.summary.items() if _is_number(v)}

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: the summary's fields, then the contract's (which win on a name clash)."""
        return _clean({**self.summary, "dlrecipe": __version__, "command": self.command, "status": self.status,
                       "exit_code": self.exit_code, "run_dir": None if self.run_dir is None else str(self.run_dir),
                       "metrics": self.metrics})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items()
                          if k.startswith(("best_", "test_", "recommended")))
        return (f"Result(command={self.command!r}, status={self.status!r}, exit_code={self.exit_code}, "
                f"run_dir={str(self.run_dir) if self.run_dir else None!r}{', ' + shown if shown else ''})")


def error_payload(command: str | None, message: str, status: str = "error", code: int = BAD_INPUT) -> dict:
    """The `--json` object of a command that could not run (bad input) or was interrupted before a result."""
    return {"dlrecipe": __version__, "command": command, "status": status, "exit_code": code, "error": message,
            "run_dir": None, "metrics": {}}


def result_of(command: str, lib_result: Any, *, strict: bool = False) -> Result:
    """A library result (TrainResult, SanityResult, LrFindResult, SearchResult, RunResult, PredictResult, Report)
    as the contract's Result."""
    if command == "sanity":
        summary = lib_result.to_dict()
        summary["verdict"] = sanity_verdict(lib_result, strict)
        summary["strict"] = strict
        status = lib_result.status
    elif command == "report":
        summary = report_summary(lib_result)
        status = "completed"
    else:
        summary = dict(lib_result.summary)
        status = summary.get("status") or getattr(lib_result, "status", None) or "completed"
    if command == "lr-find":
        summary.setdefault("recommended_lr", lib_result.recommended_lr)
    run_dir = getattr(lib_result, "run_dir", None)
    return Result(command, status, None if run_dir is None else Path(run_dir), summary,
                  exit_code(command, status, strict=strict), lib_result)


def sanity_verdict(result, strict: bool) -> str:
    """The sanity verdict in words that agree with the exit code: with --strict a warning is a failure."""
    text = result.verdict
    if strict and result.status == "warn":
        warns = [c.check for c in result.checks if c.status == "warn"]
        return f"FAIL (--strict: warnings count as failures): {', '.join(warns)} warned. " + text.split(". ", 1)[-1]
    return text


def report_summary(rep) -> dict:
    """A Report as summary fields: the headline, each curve's findings, the files written."""
    return {"name": Path(rep.run_dir).name, "command": "report", "headline": rep.headline.replace("**", ""),
            "curves": [{"label": c.label, "findings": [{"code": f.code, "message": f.message, "advice": f.advice}
                                                       for f in c.findings]} for c in rep.curves],
            "findings": sum(len(c.findings) for c in rep.curves), "files": [str(p) for p in rep.files]}


def load_schema() -> dict:
    """The JSON Schema every `--json` object validates against."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
