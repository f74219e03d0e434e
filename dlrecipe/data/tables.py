"""Tables as they come: numbers, text categories, booleans and blanks, encoded with scikit-learn's transformers.

`frame_to_raw` checks a DataFrame against the recipe (target, `data.features` / `data.drop`, missing values) and
reports every problem in one message; `fit_encoder` builds and fits, on the training split only, a
`ColumnTransformer`: numbers median-imputed, categories most-frequent-imputed and one-hot encoded (a category
first seen in validation or test encodes as all zeros), plus a missing-indicator column for every column that had
blanks in training.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from .files import RawData

CONTINUOUS_MIN_VALUES = 20     # a numeric target with more distinct values than this ...
CONTINUOUS_SINGLETONS = 0.10   # ... of which at least this fraction occur once, or that are not integers,
                               # looks continuous: refused under task = "classification"
MISSING = ("impute", "drop", "error")
MANY_VALUES = 100              # a category column with more distinct values than this is named in a note


def _is_categorical(col) -> bool:
    import pandas as pd

    return not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)


def looks_continuous(y: np.ndarray) -> bool:
    """True for a numeric target that reads as a measurement rather than class ids (see the constants above)."""
    if y.dtype.kind not in "iuf" or len(y) == 0:
        return False
    values, counts = np.unique(y[~np.isnan(y)] if y.dtype.kind == "f" else y, return_counts=True)
    if len(values) <= CONTINUOUS_MIN_VALUES:
        return False
    non_integer = y.dtype.kind == "f" and bool(np.any(values != np.round(values)))
    return non_integer or (counts == 1).mean() >= CONTINUOUS_SINGLETONS


def _listing(names) -> str:
    names = list(names)
    return ", ".join(f"'{n}'" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def frame_to_raw(df, cfg: dict, task: str, where: str, *, encode_target: bool = True) -> RawData:
    """A DataFrame (a table file or a data hook's result) as RawData: features stay a DataFrame, the target is
    encoded (classification; encode_target=False keeps the labels, for splits encoded together) or checked
    numeric (regression). Every problem found is raised in one DataError."""
    import pandas as pd

    from .files import _encode_labels

    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    target = cfg.get("target", "target")
    problems: list[str] = []
    notes: list[str] = []
    columns = list(df.columns)
    if target not in columns:
        raise DataError(f"data.source '{where}': target column '{target}' not found; columns are: "
                        f"{', '.join(columns)}")
    wanted, dropped = list(cfg.get("features") or []), list(cfg.get("drop") or [])
    unknown = [c for c in wanted + dropped + list(cfg.get("categorical") or []) if c not in columns]
    if unknown:
        problems.append(f"data.features/data.drop/data.categorical name unknown column(s) {_listing(unknown)} "
                        f"(columns: {', '.join(columns)})")
    if target in wanted:
        problems.append(f"data.features lists the target '{target}'")
    features = [c for c in (wanted or columns) if c != target and c not in dropped and c in columns]
    if not features and not unknown:
        problems.append(f"no feature columns besides target '{target}'; expected at least one")
    if len(df) == 0:
        raise DataError(f"data.source '{where}': table has no rows")
    ids = np.arange(len(df))
    no_target = df[target].isna().to_numpy()
    if no_target.all():
        problems.append(f"target column '{target}' is blank in every row")
    elif no_target.any():
        notes.append(f"{int(no_target.sum())} row(s) with a blank target '{target}' dropped")
        df, ids = df[~no_target], ids[~no_target]
    blank = [c for c in features if df[c].isna().all()]
    if blank:
        notes.append(f"column(s) {_listing(blank)} blank in every row: dropped")
        features = [c for c in features if c not in blank]
    with_missing = {c: int(n) for c in features if (n := df[c].isna().sum())}
    missing = cfg.get("missing", "impute")
    if with_missing and missing == "error":
        problems.append("missing values in column(s) " + ", ".join(f"'{c}' ({n})" for c, n in with_missing.items())
                        + " with data.missing = 'error' (use 'impute' or 'drop')")
    elif with_missing and missing == "drop":
        keep = ~df[features].isna().any(axis=1).to_numpy()
        notes.append(f"{int((~keep).sum())} row(s) with blanks in {_listing(with_missing)} dropped "
                     f"(data.missing = 'drop')")
        df, ids = df[keep], ids[keep]
        if not keep.any():
            problems.append("every row has a blank feature: nothing left with data.missing = 'drop'")
    col = df[target]
    y = None
    if task == "classification":
        raw_y = col.to_numpy()
        if not _is_categorical(col) and looks_continuous(raw_y.astype(np.float64)):
            n = col.nunique()
            problems.append(f"target '{target}' looks continuous ({n} distinct numbers): did you mean "
                            f"task = 'regression'?")
        elif not problems:
            labels = col.astype(str).to_numpy() if _is_categorical(col) else raw_y
            y, classes = labels, None
            if encode_target:
                y, _, classes = _encode_labels(where, labels)
    elif _is_categorical(col):
        problems.append(f"target column '{target}' has dtype {col.dtype}; regression needs numbers "
                        f"(or set task = 'classification')")
    else:
        y, classes = col.to_numpy(dtype=np.float32), None
    if problems:
        n = len(problems)
        raise DataError(f"data.source '{where}': " + (problems[0] if n == 1 else
                        f"{n} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))))
    frame = pd.DataFrame({c: df[c].to_numpy() for c in features})  # a fresh index: rows are positions
    return RawData(x=frame, y=y, classes=classes, ids={"all": ids}, notes=notes)


def categorical_columns(frame, named: list[str]) -> list[str]:
    return [c for c in frame.columns if c in named or _is_categorical(frame[c])]


def _as_object(frame, cats: list[str]):
    """Category values as strings with NaN for blanks (pandas' string and boolean blanks vary: None, pd.NA)."""
    out = frame.copy()
    for c in cats:
        values = out[c].astype(object)
        out[c] = values.where(values.notna(), np.nan).map(lambda v: v if isinstance(v, float) else str(v))
    return out


def fit_encoder(frame, categorical: list[str]):
    """The training split's ColumnTransformer: numbers (median), categories (most frequent, one-hot), indicators."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    cats = categorical_columns(frame, categorical)
    nums = [c for c in frame.columns if c not in cats]
    parts: list[tuple[str, Any, list[str]]] = []
    if nums:
        parts.append(("num", SimpleImputer(strategy="median", keep_empty_features=True), nums))
    if cats:
        parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                                           OneHotEncoder(handle_unknown="ignore", sparse_output=False)), cats))
    if frame.isna().any().any():
        parts.append(("missing", MissingIndicator(features="missing-only", error_on_new=False), list(frame.columns)))
    encoder = ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=True)
    encoder.fit(_as_object(frame, cats))
    return encoder


def many_valued(encoder, rows: int) -> list[str]:
    """Notes for category columns with more than MANY_VALUES distinct values, or one per row: names, ids or free
    text, whose one-hot columns a model can only memorise."""
    notes = []
    for name, trans, cols in encoder.transformers_:
        if name != "cat":
            continue
        for col, cats in zip(cols, trans[-1].categories_):
            if len(cats) > MANY_VALUES or (rows >= 20 and len(cats) >= 0.9 * rows):
                notes.append(f"column '{col}' has {len(cats)} distinct values in {rows} training rows: an id, a name "
                             f"or free text? Its one-hot columns can only be memorised (data.drop = ['{col}'])")
    return notes


def _categories_of(encoder) -> list[str]:
    """The columns a fitted encoder reads as categories."""
    return next((list(cols) for name, _, cols in encoder.transformers_ if name == "cat"), [])


def encode(encoder, frame, where: str = "table") -> np.ndarray:
    """Features of `frame` through the fitted encoder, as float32 (N, F)."""
    missing = [c for c in encoder.feature_names_in_ if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: column(s) {_listing(missing)} that the model was trained on are missing")
    frame = frame[list(encoder.feature_names_in_)]
    out = encoder.transform(_as_object(frame, _categories_of(encoder)))
    return np.asarray(out, dtype=np.float32)


def describe(encoder, frame) -> list[dict[str, Any]]:
    """One row per source column: how it is encoded (for `dlrecipe validate`)."""
    cats = set(_categories_of(encoder))
    indicated = set()
    for name, trans, cols in encoder.transformers_:
        if name == "missing":
            indicated = {cols[i] for i in trans.features_}
    rows = []
    onehot = None
    for name, trans, cols in encoder.transformers_:
        if name == "cat":
            onehot = dict(zip(cols, trans[-1].categories_))
    for c in encoder.feature_names_in_:
        blanks = int(frame[c].isna().sum())
        if c in cats:
            k = len(onehot[c])
            how = f"category: one-hot, {k} value{'s' if k != 1 else ''}"
            fill = "most frequent"
        else:
            how, fill = "number", "median"
        if blanks:
            how += f"; {blanks} blank in training, filled with the {fill}" + (" + missing indicator" if c in indicated else "")
        rows.append({"column": c, "dtype": str(frame[c].dtype), "encoding": how, "blanks": blanks})
    return rows
