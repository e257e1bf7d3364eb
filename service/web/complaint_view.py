"""What the complaint page shows beyond the API's record: the masked text with the phrases behind
the prediction marked, and the heads' probabilities in display order."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from service.schemas import Prediction

# Which head a marked phrase is shown for when several name it: why it may escalate comes first.
HEADS = (("risk", "风险"), ("cause", "投诉原因"), ("category", "业务类别"))


def _worth_marking(phrase: str) -> bool:
    """Digit or punctuation fragments ("00") would light up inside every amount: not marked."""
    return any(c.isalpha() for c in phrase)


def phrases_by_head(prediction: Prediction) -> dict[str, list[str]]:
    """Each head's phrases that pushed towards its decision (positive weight), strongest first."""
    out: dict[str, list[str]] = {}
    for head, _ in HEADS:
        part = getattr(prediction, head, None)
        if part is not None:
            out[head] = [p.phrase for p in sorted(part.phrases, key=lambda p: -p.weight)
                         if p.weight > 0 and _worth_marking(p.phrase)]
    return out


def highlight(text: str, by_head: dict[str, list[str]]) -> Markup:
    """`text` escaped, every occurrence of a phrase wrapped in <mark class="hl-<head>">; longer
    phrases win where they overlap, and each stretch of text is marked once."""
    owner: dict[str, str] = {}
    for head, _ in HEADS:
        for phrase in by_head.get(head, []):
            owner.setdefault(phrase, head)
    phrases = sorted(owner, key=len, reverse=True)
    names = dict(HEADS)
    parts: list[str] = []
    i = plain = 0
    while i < len(text):
        match = next((p for p in phrases if text.startswith(p, i)), None)
        if match is None:
            i += 1
            continue
        parts.append(str(escape(text[plain:i])))
        head = owner[match]
        parts.append(f'<mark class="hl hl-{head}" title="{names[head]}依据">{escape(match)}</mark>')
        i = plain = i + len(match)
    parts.append(str(escape(text[plain:])))
    return Markup("".join(parts))


@dataclass(frozen=True)
class HeadView:
    name: str
    label: str
    probability: float
    top_k: list[tuple[str, float]]
    phrases: list[str]


def head_views(prediction: Prediction) -> list[HeadView]:
    out = []
    for head, name in (("category", "业务类别"), ("cause", "投诉原因")):
        part = getattr(prediction, head, None)
        if part is not None:
            out.append(HeadView(name, part.label, part.probability,
                                [(k.label, k.probability) for k in part.top_k],
                                [p.phrase for p in part.phrases if p.weight > 0]))
    return out
