"""Assemble the synthetic demo corpus from its hand-written parts.

The texts and their labels are written by hand in data/demo/parts/*.jsonl. This seeded script adds
what a bank's export would carry besides: an id, the branch, a masked customer reference and the
received time (30 weeks with a weekday rhythm and office hours by channel), and links some repeat
contacts to an earlier request of the same customer. `batch` names the part family a row was written
in (`cc_a_03.jsonl` → `cc_a`), one writer's voice; training holds out whole batches to calibrate the
risk head. Run: python -m training.demo_corpus
"""

from __future__ import annotations

import argparse
import glob
import json
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "data" / "demo" / "parts"
OUT = ROOT / "data" / "demo" / "demo_corpus.csv"
COLUMNS = ["id", "text", "channel", "branch", "customer_ref", "received_at", "repeat_count", "amount",
           "category", "cause", "escalated", "batch"]

# Fictional sub-branches of a city commercial bank; the first ones are the busy city-centre outlets.
BRANCHES = [
    "营业部", "城东支行", "城西支行", "高新区支行", "滨江支行", "开发区支行", "人民路支行", "解放路支行",
    "火车站支行", "大学城支行", "新城支行", "港口支行", "北湖支行", "南山支行", "临空港支行", "科技园支行",
    "老城区支行", "东湖支行", "西郊支行", "工业园支行", "金融街支行", "江北支行", "长安路支行", "青山支行",
]
FIRST_DAY = date(2026, 4, 27)  # a Monday
WEEKS = 30
WEEKDAY_WEIGHT = np.array([1.35, 1.2, 1.1, 1.05, 1.0, 0.55, 0.45])
# Hours of arrival by channel: offices and the regulator work office hours; apps never sleep.
OFFICE = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 5, 4, 2, 3, 5, 5, 4, 2, 0, 0, 0, 0, 0, 0], dtype=float)
ALWAYS = np.array([1, .5, .3, .2, .2, .3, .8, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6, 6, 5, 3], dtype=float)
HOURS = {"营业网点": OFFICE, "监管转办": OFFICE, "信访": OFFICE, "媒体": ALWAYS * 0.5 + OFFICE,
         "电话客服": ALWAYS + OFFICE, "手机银行": ALWAYS, "网上银行": ALWAYS, "微信公众号": ALWAYS}


def read_parts(folder: Path = PARTS, exclude: frozenset[Path] = frozenset()) -> pd.DataFrame:
    """Every part's rows with its batch; `exclude` leaves those files out (resolved paths)."""
    rows = []
    for path in sorted(glob.glob(str(folder / "*.jsonl"))):
        if Path(path).resolve() in exclude:
            continue
        batch = Path(path).stem.rsplit("_", 1)[0]
        with open(path, encoding="utf-8") as fh:
            rows += [{**json.loads(line), "batch": batch} for line in fh if line.strip()]
    return pd.DataFrame(rows)


def received_times(channels: pd.Series, rng: np.random.Generator) -> list[datetime]:
    days = [FIRST_DAY + timedelta(days=d) for d in range(WEEKS * 7)]
    # A slow rise over the half-year plus holiday dips (劳动节, 国庆) in the daily volume.
    weight = np.array([WEEKDAY_WEIGHT[d.weekday()] * (1 + 0.25 * i / len(days)) for i, d in enumerate(days)])
    for i, d in enumerate(days):
        if (d.month, d.day) in {(5, 1), (5, 2), (5, 3)} or (d.month == 10 and d.day <= 7):
            weight[i] *= 0.35
    weight /= weight.sum()
    out = []
    for channel in channels:
        hours = HOURS[channel]
        day = days[rng.choice(len(days), p=weight)]
        if hours is OFFICE:
            while day.weekday() >= 5:  # referrals and counters: weekdays only
                day = days[rng.choice(len(days), p=weight)]
        hour = int(rng.choice(24, p=hours / hours.sum()))
        out.append(datetime.combine(day, time(hour, int(rng.integers(60)), int(rng.integers(60)))))
    return out


def build(seed: int = 20260427) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = read_parts()
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    branch_weight = 1 / np.arange(1, len(BRANCHES) + 1) ** 0.6
    frame["branch"] = rng.choice(BRANCHES, size=len(frame), p=branch_weight / branch_weight.sum())
    frame["received_at"] = received_times(frame["channel"], rng)
    frame = frame.sort_values("received_at").reset_index(drop=True)
    frame["customer_ref"] = [f"C{v:08X}" for v in rng.choice(16**8, size=len(frame), replace=False)]
    # A repeat contact often belongs to a customer already seen about the same kind of business.
    for i in np.flatnonzero(frame["repeat_count"].to_numpy() > 0):
        earlier = np.flatnonzero((frame.index.to_numpy() < i) & (frame["category"] == frame.at[i, "category"]))
        if len(earlier) and rng.random() < 0.5:
            frame.at[i, "customer_ref"] = frame.at[int(rng.choice(earlier)), "customer_ref"]
            frame.at[i, "branch"] = frame.at[int(rng.choice(earlier)), "branch"]
    frame["id"] = [f"DEMO-{i + 1:05d}" for i in range(len(frame))]
    frame["received_at"] = frame["received_at"].map(lambda t: t.isoformat(timespec="seconds"))
    frame["amount"] = frame["amount"].map(lambda v: "" if v is None or pd.isna(v) else f"{float(v):.2f}")
    frame["repeat_count"] = frame["repeat_count"].fillna(0).astype(int)
    frame["escalated"] = frame["escalated"].astype(int)
    return frame[COLUMNS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    frame = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False, encoding="utf-8")
    print(f"wrote {len(frame)} requests to {args.out}")


if __name__ == "__main__":
    main()
