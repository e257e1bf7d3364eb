"""Letter numbers (〔2026〕第0001号).

They come from the per-year row of `letter_sequences`, incremented inside the letter's transaction:
the row lock makes concurrent issuers wait their turn, a rollback gives the number back, so numbers
are sequential and gapless per year, and UNIQUE (year, seq) means none is ever issued twice.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.tables import LetterSequence


def format_number(year: int, seq: int) -> str:
    return f"〔{year}〕第{seq:04d}号"


def take_number(session: Session, year: int) -> int:
    """The next letter number of `year`, held (row-locked) until the transaction ends."""
    bump = (update(LetterSequence).where(LetterSequence.year == year)
            .values(last_seq=LetterSequence.last_seq + 1).returning(LetterSequence.last_seq)
            .execution_options(synchronize_session=False))
    seq = session.execute(bump).scalar()
    if seq is None:  # the year's first letter: create the counter (a racing creator wins, we bump theirs)
        try:
            with session.begin_nested():
                session.add(LetterSequence(year=year, last_seq=0))
                session.flush()
        except IntegrityError:
            pass
        seq = session.execute(bump).scalar_one()
    return seq
