"""Check hand-written corpus parts before they join the demo corpus.

The label sets, channels and banned openings are those the corpus already has (read from the other
parts and from WRITING_BRIEF_2.md), so the check follows the data rather than a list kept here.
Run: python -m training.check_parts data/demo/parts/NEW_*.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from training.demo_corpus import PARTS, read_parts

FIELDS = {"text", "channel", "category", "cause", "escalated", "repeat_count", "amount"}
BRIEF_2 = PARTS.parent / "WRITING_BRIEF_2.md"


def banned_openings() -> set[str]:
    """The four-character openings WRITING_BRIEF_2.md lists as overused."""
    text = BRIEF_2.read_text(encoding="utf-8")
    listed = text.split("Do not reuse the first round's favourite openings:", 1)[1].split("No more than", 1)[0]
    return {w for w in re.split(r"[,，.\s]+", listed) if len(w) == 4}


def check(paths: list[Path]) -> tuple[list[str], int]:
    """Problems in the given parts, one line each (empty: fine), and how many rows they hold."""
    existing = read_parts(exclude=frozenset(p.resolve() for p in paths))  # what the new rows join
    categories, causes, channels = (set(existing[c]) for c in ("category", "cause", "channel"))
    errors: list[str] = []
    rows = []
    for path in paths:
        if path.resolve().parent != PARTS.resolve():
            errors.append(f"{path}: parts live in {PARTS}")
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: not JSON ({exc.msg})")
                continue
            if set(row) != FIELDS:
                errors.append(f"{where}: fields must be exactly {sorted(FIELDS)}, got {sorted(row)}")
                continue
            text = row["text"]
            if not isinstance(text, str) or not 10 <= len(text) <= 400:
                errors.append(f"{where}: text must be 10-400 characters")
                continue
            for field, allowed in (("category", categories), ("cause", causes), ("channel", channels)):
                if row[field] not in allowed:
                    errors.append(f"{where}: unknown {field} {row[field]!r}")
            if row["escalated"] not in (0, 1):
                errors.append(f"{where}: escalated must be 0 or 1")
            if not isinstance(row["repeat_count"], int) or not 0 <= row["repeat_count"] <= 9:
                errors.append(f"{where}: repeat_count must be an integer 0-9")
            if row["amount"] is not None and not isinstance(row["amount"], int | float):
                errors.append(f"{where}: amount must be a number or null")
            rows.append((where, row))
    # Openings and texts: against each other and against every other part.
    counts = Counter(t[:4] for t in existing["text"])
    banned = banned_openings()
    mine = Counter(row["text"][:4] for _, row in rows)
    for opening, k in mine.items():
        if k > 3:
            errors.append(f"{k} rows start with {opening!r} (3 at most)")
        if opening in banned:
            errors.append(f"rows start with {opening!r}, an opening WRITING_BRIEF_2.md bans")
        elif counts[opening] >= 5:
            errors.append(f"rows start with {opening!r}, which {counts[opening]} existing rows already use")
    seen, taken = set(), set(existing["text"])
    for where, row in rows:
        if row["text"] in seen or row["text"] in taken:
            errors.append(f"{where}: duplicate text")
        seen.add(row["text"])
    if rows:
        lengths = [len(row["text"]) for _, row in rows]
        short = sum(n < 40 for n in lengths) / len(lengths)
        long = sum(n > 150 for n in lengths) / len(lengths)
        escalated = sum(row["escalated"] for _, row in rows) / len(rows)
        if not 0.15 <= short <= 0.35 or not 0.15 <= long <= 0.35:
            errors.append(f"lengths: {short:.0%} under 40 and {long:.0%} over 150 characters (aim: 25% each)")
        if not 0.2 <= escalated <= 0.4:
            errors.append(f"escalated share {escalated:.0%} (aim: about 30%)")
    return errors, len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", type=Path)
    args = parser.parse_args(argv)
    missing = [p for p in args.parts if not p.is_file()]
    if missing:
        print(f"error: no such file: {missing[0]}", file=sys.stderr)
        return 2
    errors, rows = check(args.parts)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if not errors:
        print(f"{rows} rows in {len(args.parts)} file(s): no problem found")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
