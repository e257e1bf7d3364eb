"""Explanations: weights spread over a text's characters → the whole words and phrases behind a decision.

Both backends end here. The linear heads spread each feature's contribution (weight × value) over
the characters its occurrences cover (models/features.py, `NgramCounter.attribute`); the fine-tuned
encoder spreads gradient × input over its tokens' characters. Either way a phrase is a run of whole
words of the text that all pushed towards the decision, so a character n-gram that crosses two words
(次来 in 第三次来电) never shows; stop words, numbers, masked identifiers and the generic words of a
request (要求, 客户, 网点: `explain_stoplist.txt`) never stand as a phrase of their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from models.text import Segmenter, _engine, read_word_list

MAX_PHRASE_WORDS = 3
MAX_PHRASE_CHARS = 16
# A phrase that moved the decision by under a tenth of what the strongest one did says nothing to a
# case officer (a Latin token in pasted markup scored 0.003 beside 0.3): it is not shown.
MIN_SHARE_OF_STRONGEST = 0.1
# Identifiers masked by clean() (139****5678, z***@x.cn) are never a phrase. ASCII only: \w would
# also match the Chinese words either side and leave the whole clause unexplained.
_MASKED = re.compile(r"[0-9A-Za-z_.@-]*\*{2,}[0-9A-Za-z_.@-]*")
_DIGITS = re.compile(r"[\d.,%]+$")
# Single function characters join words inside a phrase (卡被吞) but never start or end one (年费被).
_FUNCTION_CHARS = frozenset("被把了都会说也又还就在给让对从向跟很太再才却已而并但及等的地得着过吧呢啊吗呀哦嘛和与或我你您他她它那这")

Unit = tuple[int, int, str]  # (start, end, kind) of one segmenter piece of a text


@lru_cache(maxsize=1)
def generic_words() -> frozenset[str]:
    """Words every request uses (要求, 客户, 网点, 本人…): they explain no decision."""
    return frozenset(read_word_list(None, "explain_stoplist.txt"))


@lru_cache(maxsize=4)
def word_units_fn(engine: str = "rjieba") -> Callable[[str], list[Unit]]:
    """Cuts a text into (start, end, kind) units: kind 'word', 'glue' (space, stop word, number; may sit
    inside a phrase) or 'break' (punctuation, masked identifiers, generic request words)."""
    seg = Segmenter(engine)
    cut = _engine(seg.engine, seg.userdict)
    generic = generic_words()

    def units(text: str) -> list[Unit]:
        pieces = cut(text)
        if "".join(pieces) != text:  # the segmenter changed the text: fall back to characters
            pieces = list(text)
        masked = np.zeros(len(text) + 1, dtype=bool)
        for m in _MASKED.finditer(text):
            masked[m.start():m.end()] = True
        out, pos = [], 0
        for piece in pieces:
            start, end = pos, pos + len(piece)
            pos = end
            low = seg.prepare(piece).strip()
            if (masked[start:end].any() or (low and re.fullmatch(r"[\W_]+", low)) or low in generic
                    or (piece and piece.isspace())):  # a space ends a phrase: 三天 今天 is two
                kind = "break"
            elif not low or low in seg.stopwords or low in _FUNCTION_CHARS or _DIGITS.match(low):
                kind = "glue"
            else:
                kind = "word"
            out.append((start, end, kind))
        return out
    return units


def phrases_from_char_scores(text: str, units: list[Unit], chars: np.ndarray, n: int) -> list[dict[str, float]]:
    """The phrases of `text` that pushed hardest towards the decision, from one score per character.

    Words sum their characters; phrases are runs of up to three positive words (glue may sit between
    them) with at least one word of two characters or more (上买, two single characters, says nothing),
    and at least MIN_SHARE_OF_STRONGEST of the strongest phrase's score. Weights are shares of the
    total |score| of the text.
    """
    total = float(np.abs(chars).sum())
    if total <= 0 or not units:
        return []
    word_score = [float(chars[a:b].sum()) for a, b, _ in units]

    def single(k: int) -> bool:
        return 0 <= k < len(units) and units[k][2] == "word" and units[k][1] - units[k][0] == 1

    def cuts_compound(i: int, j: int) -> bool:
        # Two single-character words side by side are most likely one word the segmenter split
        # (基金|定|投): a phrase neither starts nor ends between them.
        return (single(i) and single(i - 1)) or (single(j) and single(j + 1))
    candidates: dict[str, tuple[float, int, int]] = {}  # phrase → (score, start, end) of its best place
    for i, (a, _, kind) in enumerate(units):
        if kind != "word" or word_score[i] <= 0:
            continue
        words, s, long_word = 0, 0.0, False
        for j in range(i, len(units)):
            kind_j = units[j][2]
            if kind_j == "break" or (kind_j == "word" and word_score[j] <= 0):
                break
            s += word_score[j]
            if kind_j != "word":
                continue
            words += 1
            long_word = long_word or units[j][1] - units[j][0] >= 2
            phrase = text[a:units[j][1]].strip()
            if len(phrase) > MAX_PHRASE_CHARS or words > MAX_PHRASE_WORDS:
                break
            if long_word and s > candidates.get(phrase, (-math.inf,))[0] and not cuts_compound(i, j):
                candidates[phrase] = (s, a, units[j][1])
    chosen: list[tuple[str, float, int, int]] = []
    ranked = sorted(candidates.items(), key=lambda kv: -kv[1][0])
    floor = ranked[0][1][0] * MIN_SHARE_OF_STRONGEST if ranked else 0.0
    for phrase, (w, a, b) in ranked:
        if w < floor:
            break
        # Overlapping runs say the same thing twice: keep the stronger.
        if any(phrase in c or c in phrase or (a < cb and ca < b) for c, _, ca, cb in chosen):
            continue
        chosen.append((phrase, w, a, b))
        if len(chosen) == n:
            break
    return [{"phrase": p, "weight": round(w / total, 4)} for p, w, _, _ in chosen]


def phrases_from_tokens(text: str, units: list[Unit], scores: np.ndarray, spans: Sequence[tuple[int, int]],
                        prefix: int, n: int) -> list[dict[str, float]]:
    """Phrases from token scores: each token's score spread evenly over its characters (`spans` are
    offsets into prefix + text, as an encoder's tokenizer gives them)."""
    chars = np.zeros(len(text), dtype=np.float64)
    for score, (a, b) in zip(np.asarray(scores, dtype=np.float64), spans, strict=False):
        a, b = max(a - prefix, 0), min(b - prefix, len(text))
        if b > a:
            chars[a:b] += score / (b - a)
    return phrases_from_char_scores(text, units, chars, n)
