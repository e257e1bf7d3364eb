"""Explanations as a reader sees them: whole words and runs of words of the text, never a generic request
word on its own, never a fragment that crosses two words; for the risk head, what raised the risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.explain import generic_words, phrases_from_char_scores, phrases_from_tokens, word_units_fn
from models.text import clean

UNITS = word_units_fn("rjieba")


def phrases(text: str, chars=None, n: int = 5) -> list[str]:
    """The phrases of `text` for one score per character (every character pushing the same way by default)."""
    scores = np.ones(len(text)) if chars is None else np.asarray(chars, dtype=float)
    return [p["phrase"] for p in phrases_from_char_scores(text, UNITS(text), scores, n)]


def scores_on(text: str, *parts: str, value: float = 1.0, rest: float = 0.0) -> np.ndarray:
    """`value` on each character of the given substrings, `rest` elsewhere."""
    chars = np.full(len(text), rest)
    for part in parts:
        k = text.index(part)
        chars[k:k + len(part)] = value
    return chars


def boundaries(text: str) -> set[int]:
    return {a for a, _, _ in UNITS(text)} | {b for _, b, _ in UNITS(text)}


def aligned(text: str, phrase: str) -> bool:
    """Some occurrence of `phrase` in `text` starts and ends where the segmenter's words do."""
    cuts = boundaries(text)
    k = text.find(phrase)
    while k >= 0:
        if k in cuts and k + len(phrase) in cuts:
            return True
        k = text.find(phrase, k + 1)
    return False


# --- word units -------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["rjieba", "jieba"])
def test_units_tile_the_text(engine):
    text = "本人于3月3日在ATM取款2000元，机器没出钞 账户却扣了钱！客户要求网点退款"
    units = word_units_fn(engine)(text)
    assert units[0][0] == 0 and units[-1][1] == len(text)
    assert all(b == a2 for (_, b, _), (a2, _, _) in zip(units, units[1:], strict=False))
    assert {kind for _, _, kind in units} <= {"word", "glue", "break"}


def test_unit_kinds():
    text = "客户要求退还年费，第三次来电 了"
    kind = {text[a:b]: k for a, b, k in UNITS(text)}
    assert kind["客户"] == kind["要求"] == kind["来电"] == "break"  # generic request words
    assert kind["，"] == kind[" "] == "break"  # punctuation and spaces end a phrase
    assert kind["退还"] == kind["年费"] == kind["第三次"] == "word"
    assert kind["了"] == "glue"


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown segmenter"):
        word_units_fn("nosuch")("年费")


def test_the_stoplist_holds_the_generic_request_words():
    assert {"要求", "客户", "网点", "本人", "银行", "来电"} <= generic_words()
    assert not {"年费", "催收", "盗刷", "投诉"} & generic_words()


# --- phrases from character scores ----------------------------------------------------------------------
def test_phrases_are_whole_words_not_fragments_across_two():
    text = "第三次来电要求退还年费"
    # The weight sits on 次来 only (a character bigram crossing 第三次|来电): the word it falls in shows.
    shown = phrases(text, scores_on(text, "次来"))
    assert shown == ["第三次"]
    assert all("次来" not in p and aligned(text, p) for p in phrases(text))


def test_generic_words_never_stand_alone_nor_inside_a_phrase():
    assert phrases("客户要求网点") == []
    assert phrases("客户要求网点退款") == ["退款"]
    text = "本人多次要求银行退还年费"
    shown = phrases(text)
    assert shown and not set(shown) & generic_words()
    assert all(g not in p for p in shown for g in ("本人", "要求", "银行"))


def test_a_phrase_needs_a_word_of_two_characters():
    text = "上买了理财"
    assert phrases(text, scores_on(text, "上买")) == []  # two single characters say nothing
    assert phrases("我的卡被吞了") == []
    assert phrases(text, scores_on(text, "理财")) == ["理财"]


def test_a_space_ends_a_phrase():
    assert sorted(phrases("退款 年费")) == ["年费", "退款"]
    assert "信用卡年费" in phrases("信用卡年费 还款日")
    assert all(" " not in p for p in phrases("信用卡年费 还款日 违约金"))


def test_split_compounds_are_not_cut():
    text = "基金定投被扣款"
    assert [text[a:b] for a, b, _ in UNITS(text)][:3] == ["基金", "定", "投"]  # the segmenter splits 定投
    everything = phrases(text)
    assert "定投被扣款" in everything
    # No phrase starts at 投 or ends at 定: they stay together, whichever way the weights fall.
    for chars in (np.ones(len(text)), scores_on(text, "投被扣款"), scores_on(text, "基金定"),
                  scores_on(text, "定", value=-1.0, rest=1.0)):
        for p in phrases(text, chars):
            assert not p.startswith("投") and not p.endswith("定"), (p, chars)


def test_glue_joins_words_but_never_starts_or_ends_a_phrase():
    assert phrases("年费被乱收了") == ["年费被乱收"]
    for p in phrases("我的信用卡被盗刷了，还被收了年费"):
        assert p[0] not in "我的被了还" and p[-1] not in "我的被了还", p


def test_words_that_pushed_the_other_way_break_a_phrase():
    text = "信用卡年费乱收"
    shown = phrases(text, scores_on(text, "年费", value=-2.0, rest=1.0))
    assert "年费" not in "".join(shown) and "信用卡" in shown


def test_numbers_and_masked_identifiers_are_never_phrases():
    assert phrases("存了50000元只剩49000元") == []
    text = clean("卡号6222021234567890123，信用卡年费")
    assert "*" in text
    assert all("*" not in p and any(ch.isalpha() for ch in p) for p in phrases(text))


def test_weights_are_shares_sorted_and_overlaps_dropped():
    text = "信用卡被盗刷，要求退还年费，催收电话骚扰家人"
    chars = scores_on(text, "盗刷", value=3.0, rest=0.5)
    chars[text.index("，")] = -4.0
    out = phrases_from_char_scores(text, UNITS(text), chars, 5)
    weights = [o["weight"] for o in out]
    assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1
    total = np.abs(chars).sum()
    best = out[0]["phrase"]
    k = text.index(best)
    assert "盗刷" in best and out[0]["weight"] == pytest.approx(chars[k:k + len(best)].sum() / total, abs=1e-4)
    spans = [(text.index(o["phrase"]), text.index(o["phrase"]) + len(o["phrase"])) for o in out]
    assert all(b1 <= a2 or b2 <= a1 for i, (a1, b1) in enumerate(spans) for a2, b2 in spans[i + 1:])
    assert len(phrases_from_char_scores(text, UNITS(text), chars, 1)) == 1


def test_phrases_far_weaker_than_the_strongest_are_not_shown():
    # pasted markup around a complaint: its Latin tokens carry a trace of weight, the complaint the weight
    text = "信用卡被盗刷 href onclick 要求退还年费"
    chars = scores_on(text, "盗刷", value=3.0, rest=0.0) + scores_on(text, "href", value=0.02) \
        + scores_on(text, "年费", value=0.4)
    shown = phrases(text, chars)
    assert any("盗刷" in p for p in shown) and any("年费" in p for p in shown)
    assert not any("href" in p for p in shown)


def test_no_weight_no_phrases():
    text = "信用卡年费"
    assert phrases_from_char_scores(text, UNITS(text), np.zeros(len(text)), 5) == []
    assert phrases(text, -np.ones(len(text))) == []


def test_token_scores_spread_over_their_characters():
    """An encoder's tokens carry offsets into prefix + text; tokens inside the prefix never show."""
    prefix = "query: "
    text = "信用卡被盗刷要求退款"
    p = len(prefix)
    spans = [(0, 5), (p + 0, p + 3), (p + 3, p + 4), (p + 4, p + 6), (p + 6, p + 8), (p + 8, p + 10), (0, 0)]
    scores = np.array([50.0, 1.2, 0.2, 2.0, 3.0, 0.9, 7.0])
    got = phrases_from_tokens(text, UNITS(text), scores, spans, len(prefix), 5)
    chars = np.zeros(len(text))
    for s, (a, b) in zip(scores[1:6], spans[1:6], strict=True):
        chars[a - p:b - p] = s / (b - a)
    assert got == phrases_from_char_scores(text, UNITS(text), chars, 5)
    assert [g["phrase"] for g in got] == ["信用卡被盗刷", "退款"]  # 要求 (generic) breaks the run, shows alone never


# --- end to end: a trained bundle -------------------------------------------------------------------
@pytest.fixture(scope="module")
def explained(demo_bundle, demo_corpus):
    frame = pd.read_csv(demo_corpus).sample(300, random_state=11)
    texts = [clean(t) for t in frame["text"]]
    fields = frame[["channel", "repeat_count", "amount"]]
    return texts, demo_bundle.predict(texts, fields, explain=True, already_clean=True)


def test_every_head_explains_in_words_of_the_text(explained):
    texts, predictions = explained
    generic = generic_words()
    shown = 0
    for text, p in zip(texts, predictions, strict=True):
        for head in ("category", "cause", "risk"):
            items = p[head]["phrases"]
            assert all(set(item) == {"phrase", "weight"} for item in items)
            weights = [item["weight"] for item in items]
            assert weights == sorted(weights, reverse=True) and all(0 <= w <= 1 for w in weights)
            for item in items:
                phrase = item["phrase"]
                assert phrase in text and phrase not in generic, (head, phrase, text)
                assert aligned(text, phrase), (head, phrase, text)
                assert " " not in phrase and "*" not in phrase
                shown += 1
    assert shown > 600  # nearly every text is explained, by each head


def test_risk_phrases_are_what_raised_the_risk(explained, demo_bundle):
    """Each risk phrase carries positive attribution, and taking the strongest one out of the text lowers
    the text's risk logit."""
    texts, predictions = explained
    risk = demo_bundle.heads["risk"]
    lowered = tried = 0
    for text, p in zip(texts, predictions, strict=True):
        items = p["risk"]["phrases"]
        if not items:
            continue
        row = demo_bundle.features([text])
        chars = demo_bundle.counter.attribute(text, *risk.contributions(row.getrow(0)))
        for item in items:
            phrase = item["phrase"]
            starts = [k for k in range(len(text)) if text.startswith(phrase, k)]
            assert max(chars[k:k + len(phrase)].sum() for k in starts) > 0, (phrase, text)
        top = items[0]
        if top["weight"] >= 0.1:
            tried += 1
            before = risk.text_logit(row)[0]
            after = risk.text_logit(demo_bundle.features([text.replace(top["phrase"], "", 1)]))[0]
            lowered += after < before
    assert tried > 100 and lowered >= 0.95 * tried, (lowered, tried)


def test_a_repeat_complaint_is_explained_by_what_makes_it_risky(demo_bundle):
    text = "第三次来电要求退还年费，再不处理就投诉到银保监会"
    [p] = demo_bundle.predict([text])
    risk = [x["phrase"] for x in p["risk"]["phrases"]]
    assert "第三次" in risk and any("投诉" in ph for ph in risk)
    for head in ("category", "cause", "risk"):
        for x in p[head]["phrases"]:
            assert "次来" not in x["phrase"] and "来电" not in x["phrase"] and x["phrase"] != "要求"
    assert any("年费" in x["phrase"] for x in p["cause"]["phrases"])


def test_no_phrases_without_explain(demo_bundle):
    [p] = demo_bundle.predict(["信用卡年费乱收"], explain=False)
    assert all("phrases" not in p[head] for head in ("category", "cause", "risk"))


def test_a_masked_number_hides_only_itself(demo_bundle):
    text = clean("我的手机13912345678一直接到催收电话")
    assert "****" in text
    kinds = {text[a:b]: k for a, b, k in UNITS(text)}
    assert kinds.get("催收电话", kinds.get("催收")) == "word"
    [p] = demo_bundle.predict([text], already_clean=True)
    assert any("催收" in x["phrase"] for x in p["cause"]["phrases"])
