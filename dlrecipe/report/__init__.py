"""`dlrecipe report` and `dlrecipe compare`: a run folder read as a page (report.md, a self-contained report.html,
report.json), and several runs side by side.

    curves.py    which metrics.csv a report reads, their diagnosis (diagnose.py told the recipe), their plots
    tables.py    summaries as key/value rows, CSV logs sampled and rounded, file names in words
    build.py     the page: header card, table of contents, the recipe's story per step and pass, raw tables
    page.py      report.md -> report.html with markdown-it-py, figures embedded
    compare.py   `dlrecipe compare`
"""
from .build import NO_CURVES, Report, build_report, headline
from .compare import compare
from .curves import Curve, diagnose_curve, loss_scale, read_metrics, sparkline
from .tables import MAX_TABLE_ROWS

__all__ = [
           "MAX_TABLE_ROWS",
           "NO_CURVES",
           "Curve",
           "Report",
           "build_report",
           "compare",
           "diagnose_curve",
           "headline",
           "loss_scale",
           "read_metrics",
           "sparkline",
]
