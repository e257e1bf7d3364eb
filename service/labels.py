"""Feedback → a training file (`xiaobao export-labels`), closing the retraining loop.

Only complaints with at least one recorded outcome are exported, in the demo corpus's columns so
`xiaobao train --data FILE` reads them as they are:

    id,text,channel,branch,customer_ref,received_at,repeat_count,amount,category,cause,escalated

`category`/`cause` hold a corrected label where feedback gave one, the predicted label where
feedback confirmed the prediction (`confirmed: true`), and stay empty otherwise: an unreviewed
prediction is not a label, and training on it would only teach the model its own mistakes.
`escalated` is 1/0 where feedback said so, else empty. Empty cells leave a row out of that head only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from service.db import Database

COLUMNS = ["id", "text", "channel", "branch", "customer_ref", "received_at", "repeat_count", "amount",
           "category", "cause", "escalated"]
FORMATS = (".csv", ".jsonl", ".xlsx")


class ExportError(Exception):
    """One line for the user."""


@dataclass
class ExportSummary:
    path: Path
    rows: int
    labelled: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """Heads `xiaobao train` would refuse for want of two classes, with the option that skips them."""
        options = {"category": "--category-col ''", "cause": "--cause-col ''", "escalated": "--risk-col ''"}
        return [f"{col}: {self.classes.get(col, 0)} class(es) among {self.labelled.get(col, 0)} labelled rows; "
                f"train with {opt} until there are at least two" for col, opt in options.items()
                if self.classes.get(col, 0) < 2]


def label_rows(db: Database, zone: ZoneInfo) -> list[dict[str, object]]:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from service.complaints import merged_labels
    from service.tables import Complaint, ComplaintOutcome

    rows = []
    with db.reading() as session:
        query = (select(Complaint).where(Complaint.id.in_(select(ComplaintOutcome.complaint_id)))
                 .options(selectinload(Complaint.outcomes)).order_by(Complaint.received_at, Complaint.id))
        for c in session.scalars(query):
            labels = merged_labels(c, c.outcomes)
            if labels.category is None and labels.cause is None and labels.escalated is None:
                continue  # feedback without a label (a note, a closing) teaches nothing
            rows.append({
                "id": c.external_id, "text": c.text_masked, "channel": c.channel, "branch": c.branch,
                "customer_ref": c.customer_ref or "",
                # local wall-clock time without offset, as the demo corpus writes it
                "received_at": c.received_at.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds"),
                "repeat_count": "" if c.repeat_count is None else str(c.repeat_count),
                "amount": "" if c.amount is None else f"{c.amount:.2f}",
                "category": labels.category or "", "cause": labels.cause or "",
                "escalated": "" if labels.escalated is None else str(int(labels.escalated)),
            })
    return rows


def export_labels(db: Database, out: Path | str, zone: ZoneInfo) -> ExportSummary:
    import pandas as pd

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ExportError(f"{out}: write .csv, .jsonl or .xlsx")
    rows = label_rows(db, zone)
    if not rows:
        raise ExportError("no outcomes with labels recorded yet (POST /v1/complaints/{id}/outcome); nothing to export")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    suffix = out.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(tmp, index=False, encoding="utf-8")
    elif suffix == ".jsonl":
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_excel(tmp, index=False, engine="openpyxl")
    tmp.replace(out)  # a reader never sees half a file
    summary = ExportSummary(out, len(rows))
    for col in ("category", "cause", "escalated"):
        values = [r[col] for r in rows if r[col] != ""]
        summary.labelled[col] = len(values)
        summary.classes[col] = len(Counter(values))
    return summary
