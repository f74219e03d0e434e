"""dlrecipe.diagnose thresholds added by issue 12 (the curve rules' main tests live in test_report.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dlrecipe.diagnose import OVERFIT_MIN_RISE, diagnose


def _curves(train_loss, val_loss) -> pd.DataFrame:
    n = len(train_loss)
    return pd.DataFrame({"epoch": np.arange(1, n + 1), "lr": 0.1, "train_loss": train_loss, "train_acc": 1.0,
                         "val_loss": val_loss, "val_acc": 1.0})


def test_a_rise_of_a_loss_near_zero_is_no_overfitting():
    """A val loss 0.0002577 -> 0.00114 rose "344%" on a run with test accuracy 1.0: not meaningfully above zero."""
    val = np.r_[np.geomspace(0.05, 0.0002577, 10), np.linspace(0.0003, 0.00114, 10)]
    train = np.geomspace(0.05, 1e-6, 20)
    assert val[-1] - val.min() < OVERFIT_MIN_RISE
    assert "overfitting" not in {f.code for f in diagnose(_curves(train, val))}
    assert "overfitting" in {f.code for f in diagnose(_curves(train, val * 100))}  # 0.026 -> 0.114: a real rise
