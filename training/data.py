"""Reading labelled exports (.csv, .jsonl, .xlsx, .parquet) into one canonical frame.

Every problem with a file becomes a `DataError` whose message is one line naming the file, and
where it applies the row and the column. Row numbers are what a person sees when opening the file:
spreadsheet rows (header = row 1) for .csv/.xlsx, line numbers for .jsonl, 1-based rows for .parquet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.base import DataError

READERS = (".csv", ".jsonl", ".xlsx", ".parquet")
RISK_TRUE = {"1", "1.0", "true", "yes", "y", "是", "t"}
RISK_FALSE = {"0", "0.0", "false", "no", "n", "否", "f"}


UNBATCHED = "(no batch)"


@dataclass
class Columns:
    """Which columns hold what. `explicit` records what the user named on the command line, so a
    missing explicit column is an error while a missing default one only means "no such head"."""

    text: Sequence[str] = ("text",)
    category: str | None = "category"
    cause: str | None = "cause"
    risk: str | None = "escalated"
    time: str | None = None
    # Which rows were written together (a writer, a source system, a month's export): folds that
    # calibrate the risk head hold out whole batches. Used where the file has the column.
    batch: str | None = "batch"
    features: Sequence[str] = ("channel", "repeat_count", "amount")
    multilabel_sep: str | None = None
    explicit: frozenset[str] = frozenset()


@dataclass
class Dataset:
    """Canonical frame: `text`, optional `category`/`cause` (str or list[str]), `risk` (0/1),
    `time` (datetime), `batch` (str) and the raw structured feature columns; `row` keeps the file's
    row numbers."""

    frame: pd.DataFrame
    source: str
    heads: list[str]
    features: list[str]
    skipped: dict[str, list[int]] = field(default_factory=dict)
    multilabel: bool = False

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.frame.iloc[index].reset_index(drop=True), self.source, self.heads, self.features,
                       {}, self.multilabel)

    def skipped_summary(self) -> str | None:
        parts = []
        for reason, rows in self.skipped.items():
            shown = ", ".join(map(str, rows[:5])) + (" …" if len(rows) > 5 else "")
            parts.append(f"{len(rows)} {reason} (rows {shown})")
        return f"{self.source}: skipped " + "; ".join(parts) if parts else None


def read_table(path: str | Path) -> tuple[pd.DataFrame, int]:
    """The file as a frame of raw values, and the offset that turns a 0-based index into a row number."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use {', '.join(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            except UnicodeDecodeError:  # Excel in China saves CSV as GBK
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="gb18030")
            return frame, 2
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False), 1
        if suffix == ".xlsx":
            return pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl"), 2
        return pd.read_parquet(path), 1
    except DataError:
        raise
    except Exception as exc:  # each reader raises its own family of errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read as {suffix[1:]} ({reason[:160]})") from None


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""


def _risk_value(v, path, row, col) -> float:
    if _blank(v):
        return np.nan
    s = str(v).strip().lower()
    if s in RISK_TRUE:
        return 1.0
    if s in RISK_FALSE:
        return 0.0
    raise DataError(f"{path}: row {row}, column '{col}': {v!r} is not a 0/1 outcome")


def load_dataset(path: str | Path, columns: Columns | None = None, *, for_training: bool = True) -> Dataset:
    """Read and validate a labelled file. Rows with empty text are skipped and reported."""
    columns = columns or Columns()
    raw, offset = read_table(path)
    source = str(path)
    present = list(raw.columns)

    def missing(col: str) -> DataError:
        return DataError(f"{source}: no column '{col}' (columns: {', '.join(map(str, present)) or 'none'})")

    for col in columns.text:
        if col not in raw:
            raise missing(col)
    if raw.empty:
        raise DataError(f"{source}: no data rows")
    texts = raw[list(columns.text)].apply(
        lambda r: "\n".join(str(v).strip() for v in r if not _blank(v)), axis=1).astype(str)
    rows = np.arange(len(raw)) + offset
    frame = pd.DataFrame({"row": rows, "text": texts.to_numpy()})
    skipped: dict[str, list[int]] = {}
    text_col = ",".join(columns.text)
    empty = texts.str.strip() == ""
    if empty.any():
        skipped[f"with empty text in '{text_col}'"] = rows[empty.to_numpy()].tolist()

    heads = []
    for head, col in (("category", columns.category), ("cause", columns.cause), ("risk", columns.risk)):
        if not col:
            continue
        if col not in raw:
            if head in columns.explicit:
                raise missing(col)
            continue
        values = raw[col].tolist()
        if head == "risk":
            frame["risk"] = [_risk_value(v, source, r, col) for v, r in zip(values, rows, strict=True)]
        elif head == "category" and columns.multilabel_sep:
            sep = columns.multilabel_sep
            frame[head] = [None if _blank(v) else [p.strip() for p in str(v).split(sep) if p.strip()]
                           for v in values]
        else:
            frame[head] = [None if _blank(v) else str(v).strip() for v in values]
        heads.append(head)

    if columns.time:
        if columns.time not in raw:
            raise missing(columns.time)
        times = pd.to_datetime(raw[columns.time], errors="coerce", format="mixed")
        bad = times.isna().to_numpy() & ~raw[columns.time].map(_blank).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: row {rows[i]}, column '{columns.time}': "
                            f"{raw[columns.time].iloc[i]!r} is not a date")
        frame["time"] = times.to_numpy()

    if columns.batch:
        if columns.batch in raw:
            # Rows without one (feedback exported by the service, appended to a corpus) are one batch
            # of their own: they were written by the bank's customers, not by any corpus writer.
            frame["batch"] = [UNBATCHED if _blank(v) else str(v).strip() for v in raw[columns.batch].tolist()]
        elif "batch" in columns.explicit:
            raise missing(columns.batch)

    features = []
    for col in columns.features:
        if col in raw:
            frame[col] = raw[col].to_numpy()
            features.append(col)
        elif for_training and "features" in columns.explicit:
            raise missing(col)

    frame = frame[~empty.to_numpy()].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{source}: every row has empty text in '{text_col}'")
    ds = Dataset(frame, source, heads, features, skipped, bool(columns.multilabel_sep))
    if for_training:
        check_trainable(ds, columns)
    return ds


def check_trainable(ds: Dataset, columns: Columns) -> None:
    """Each label column must hold at least two classes among its labelled rows."""
    if not ds.heads:
        wanted = [c for c in (columns.category, columns.cause, columns.risk) if c]
        raise DataError(f"{ds.source}: none of the label columns {', '.join(wanted)} is present")
    for head in ds.heads:
        col = {"category": columns.category, "cause": columns.cause, "risk": columns.risk}[head]
        labelled = ds.frame[head].dropna()
        if head == "category" and ds.multilabel:
            classes = {lab for labels in labelled for lab in labels}
        elif head == "risk":
            classes = {int(v) for v in labelled}
        else:
            classes = set(labelled.tolist())
        if len(classes) < 2:
            only = ", ".join(map(str, sorted(classes))) or "no labels at all"
            raise DataError(f"{ds.source}: column '{col}' has only one class ({only}); "
                            "a head needs at least two")
        unlabelled = ds.frame.loc[ds.frame[head].isna(), "row"].tolist()
        if unlabelled:
            ds.skipped[f"without a '{col}' label (left out of that head)"] = unlabelled


def labelled(ds: Dataset, head: str) -> np.ndarray:
    """Indices of rows that carry a label for `head`."""
    return np.flatnonzero(ds.frame[head].notna().to_numpy())
