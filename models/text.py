"""Text pipeline: normalisation, PII masking and word segmentation.

`clean()` is what every piece of the product applies before a text is stored, logged, shown or
scored; `Segmenter` turns a cleaned text into the tokens the features are built from.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Full-width ASCII letters/digits and the ideographic space become half-width; Chinese punctuation
# (，。！？) stays as written so stored text still reads naturally.
_FULLWIDTH_ALNUM = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
                    for c in range(r[0], r[1] + 1)}
_FULLWIDTH_ALNUM.update({0x3000: 0x20, 0xFF0B: 0x2B, 0xFF0D: 0x2D, 0xFF0E: 0x2E, 0xFF20: 0x40,
                         0xFF08: 0x28, 0xFF09: 0x29})
# Controls, zero-width marks, bidirectional embeddings/overrides/isolates (they reorder what a reader
# sees: a spoofed amount or id) and the BOM are dropped.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_WHITESPACE = re.compile(r"\s+")
_ELLIPSIS = re.compile(r"\.{3,}|。{3,}")
_REPEATED_PUNCT = re.compile(r"([!?！？。，,.~～、;；:：])\1+")


def normalize(text: str) -> str:
    """Half-width alphanumerics, one space for any whitespace run, one mark for repeated punctuation."""
    text = _CONTROL.sub("", text.translate(_FULLWIDTH_ALNUM))
    text = _WHITESPACE.sub(" ", text).strip()
    text = _ELLIPSIS.sub("…", text)
    return _REPEATED_PUNCT.sub(r"\1", text)


# --- PII masking -------------------------------------------------------------------------------
# Order matters: e-mail, then ID card (18 chars, valid date part), then bank card (16-19 digits),
# then phones. Amounts, dates, short numbers and already-masked numbers (6222****1234) stay.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
    r"(?![0-9A-Za-z])"
)
_ID_CARD_15 = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![0-9A-Za-z])")
_BANK_CARD = re.compile(r"(?<![\d*])(?:\d{16,19}|\d{4}(?:[ -]\d{4}){3}(?:[ -]?\d{1,3})?)(?![\d*])")
_MOBILE = re.compile(r"(?<![\d*])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![\d*])")
_LANDLINE = re.compile(r"(?<![\d*])(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3}-)[ ]?\d{7,8}(?:-\d{1,5})?(?![\d*])")


def _keep_ends(digits: str, head: int, tail: int) -> str:
    return digits[:head] + "*" * max(len(digits) - head - tail, 4) + digits[-tail:]


def _mask_email(m: re.Match) -> str:
    local, domain = m.group(0).split("@", 1)
    return local[:1] + "***@" + domain


def _mask_card(m: re.Match) -> str:
    return _keep_ends(re.sub(r"[ -]", "", m.group(0)), 4, 4)


def _mask_mobile(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group(0))[-11:]
    return digits[:3] + "****" + digits[-4:]


def _mask_landline(m: re.Match) -> str:
    raw = m.group(0)
    area, _, number = raw.rpartition("-") if raw.startswith("0") else (raw[: raw.index(")") + 1], "", raw[raw.index(")") + 1:])
    number = number.strip()
    return f"{area}-****{number[-4:]}" if raw.startswith("0") else f"{area}****{number[-4:]}"


_MAYBE_PII = re.compile(r"\d{7}|\d[ -]\d{4}|@")  # every pattern below needs one of these


# Personal names: only where the text itself says a name follows (姓名：, 我叫, 客户 + name + a
# delimiter or a reporting verb), so place names and products are not touched. The surname stays,
# the given name becomes 某 (王小明 → 王某某), as bank correspondence writes it.
_SURNAMES = ("欧阳|司马|上官|诸葛|东方|皇甫|令狐|慕容|尉迟|"
             "王|李|张|刘|陈|杨|黄|赵|吴|周|徐|孙|马|朱|胡|郭|何|高|林|罗|郑|梁|谢|宋|唐|许|韩|冯|邓|曹|彭|"
             "曾|肖|田|董|袁|潘|于|蒋|蔡|余|杜|叶|程|苏|魏|吕|丁|任|沈|姚|卢|姜|崔|钟|谭|陆|汪|范|金|石|廖|"
             "贾|夏|韦|付|傅|方|白|邹|孟|熊|秦|邱|江|尹|薛|闫|段|雷|侯|龙|史|陶|黎|贺|顾|毛|郝|龚|邵|万|钱|"
             "严|覃|武|戴|莫|孔|向|汤|常|温|康|施|文|牛|樊|葛|邢|安|齐|易|乔|伍|庞|颜|倪|庄|聂|章|鲁|岳|翟|"
             "殷|詹|申|欧|耿|关|兰|焦|俞|左|柳|甘|祝|包|宁|尚|符|舒|阮|柯|纪|梅|童|凌|毕|单|季|裴|霍|涂|成|"
             "苗|谷|盛|曲|翁|冉|骆|蓝|路|游|辛|靳|管|柴|蒙|鲍|华|喻|祁|蒲|房|滕|屈|饶|解|牟|艾|尤|阳|时|穆|"
             "农|司|卓|古|吉|缪|简|车|项|连|芦|麦|褚|娄|窦|戚|岑|景|党|宫|费|卜|冷|晏|席|卫|米|柏|宗|瞿|桂|全|"
             "佟|应|臧|闵|苟|邬|边|卞|姬|师|和|仇|栾|隋|商|刁|沙|荣|巫|寇|桑|郎|甄|丛|仲|虞|敖|巩|明|佘|池|查|"
             "麻|苑|迟|邝")
# Given names do not start with these (they begin time words and clauses: 客户于今日来电).
_NOT_GIVEN = "(?!小姐|先生|女士)(?![某今去昨该此其已再又也都一了不很最就还先女师老经总阿大姓家氏*])"
_NAME_END = r"(?=[，,。、；;：:！!？?\s（()]|反映|称|表示|来电|致电|今年|现年|先生|女士|$)"
# Cues that name a person outright take any surname; the looser ones (客户, 本人…) skip surnames
# that are also common function characters (于, 向, 和 …), which would otherwise mask phrases.
_EXPLICIT_CUE = r"(?:姓名|名字|户名|我叫|本人叫|名叫)\s*[:：是为]?\s*"
_ROLE_CUE = r"(?:客户|持卡人|借款人|投诉人|来电人|申请人|当事人|户主|本人|老人|母亲|父亲|丈夫|妻子|儿子|女儿)(?:姓名)?[:：]?\s*"
_FUNCTION_SURNAMES = {"于", "向", "和", "时", "从", "全", "成", "文", "安", "常", "单", "商", "明", "高", "方",
                      "应", "关", "路", "车", "连", "管", "解", "师", "宁", "易", "包", "万", "金", "白", "江",
                      "华", "左", "甘", "司", "古", "吉", "简", "项", "景", "党", "宫", "费", "卜", "冷", "席",
                      "卫", "米", "宗", "边", "沙", "荣", "郎", "池", "查", "麻", "迟", "尚", "东方", "齐",
                      "回", "阳", "农", "谷", "曲", "苗", "蓝", "游", "乔", "伍", "申", "耿", "焦", "柴", "蒙"}
_ROLE_SURNAMES = "|".join(x for x in _SURNAMES.split("|") if x not in _FUNCTION_SURNAMES)
_NAME_CUE = re.compile(
    rf"(?P<cue>{_EXPLICIT_CUE})(?P<surname>{_SURNAMES}){_NOT_GIVEN}(?P<given>[\u4e00-\u9fa5]{{1,2}}?){_NAME_END}"
    rf"|(?P<cue2>{_ROLE_CUE})(?P<surname2>{_ROLE_SURNAMES}){_NOT_GIVEN}(?P<given2>[\u4e00-\u9fa5]{{1,2}}?){_NAME_END}")


def _mask_name(m: re.Match) -> str:
    cue, surname, given = (m.group("cue"), m.group("surname"), m.group("given")) if m.group("cue") is not None \
        else (m.group("cue2"), m.group("surname2"), m.group("given2"))
    return cue + surname + "某" * len(given)


def mask_names(text: str) -> str:
    """Mask a personal name where the text marks one (客户王小明反映… → 客户王某某反映…)."""
    return _NAME_CUE.sub(_mask_name, text)


def mask_pii(text: str) -> str:
    """Mask personal names, ID-card, bank-card, mobile and landline numbers and e-mail addresses."""
    text = mask_names(text)
    if not _MAYBE_PII.search(text):
        return text
    text = _EMAIL.sub(_mask_email, text)
    text = _ID_CARD.sub(lambda m: _keep_ends(m.group(0), 2, 2), text)
    text = _ID_CARD_15.sub(lambda m: _keep_ends(m.group(0), 2, 2), text)
    text = _BANK_CARD.sub(_mask_card, text)
    text = _MOBILE.sub(_mask_mobile, text)
    return _LANDLINE.sub(_mask_landline, text)


def clean(text: str) -> str:
    """The form of a text that may be stored, logged, shown and scored."""
    return mask_pii(normalize(text))


# --- Segmentation ------------------------------------------------------------------------------
_RESOURCES = resources.files("models") / "resources"
_TOKEN_DROP = re.compile(r"[\W_]+$")


def read_word_list(path: Path | str | None, default: str) -> list[str]:
    """Read a dictionary or stop-word file; tolerates a BOM and CRLF (both break jieba's own loader)."""
    raw = (_RESOURCES / default).read_bytes() if path is None else Path(path).read_bytes()
    text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip() and not line.startswith("#")]


def _parse_dict_line(line: str) -> tuple[str, int | None, str | None]:
    parts = line.split()
    word = parts[0]
    freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    tag = parts[2] if len(parts) > 2 else None
    return word, freq, tag


_ENGINE_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _engine(name: str, userdict: tuple[str, ...]):
    """One segmenter per (engine, dictionary) and process; building one takes ~0.5 s."""
    entries = [_parse_dict_line(line) for line in userdict]
    with _ENGINE_LOCK:
        if name == "rjieba":
            import rjieba

            seg = rjieba.Jieba()
            for word, freq, tag in entries:
                seg.add_word(word, freq, tag)
            return lambda s: seg.cut(s, True)
        if name == "jieba":
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.initialize()  # before any fork, so workers inherit a loaded dictionary
            for word, freq, tag in entries:
                tok.add_word(word, freq, tag)
            return lambda s: tok.lcut(s, HMM=True)
    raise ValueError(f"unknown segmenter {name!r}: choose 'rjieba' or 'jieba'")


class Segmenter:
    """Word segmentation for Chinese (jieba dictionary + banking terms) and English.

    Text is NFKC-folded and lower-cased; punctuation, masks and stop words are dropped.
    Picklable: only the configuration travels, the engine is rebuilt on first use.
    """

    def __init__(self, engine: str = "rjieba", userdict: Iterable[str] | None = None,
                 stopwords: Iterable[str] | None = None):
        self.engine = engine
        self.userdict = tuple(userdict) if userdict is not None else tuple(
            read_word_list(None, "bank_userdict.txt"))
        self.stopwords = frozenset(stopwords) if stopwords is not None else frozenset(
            read_word_list(None, "stopwords.txt"))

    def prepare(self, text: str) -> str:
        return unicodedata.normalize("NFKC", text).lower()

    def cut(self, text: str) -> list[str]:
        """Tokens of an already `clean()`ed text."""
        return self.cut_prepared(self.prepare(text))

    def cut_prepared(self, prepared: str) -> list[str]:
        """Tokens of a text already passed through `prepare`."""
        stop = self.stopwords
        return [t for t in _engine(self.engine, self.userdict)(prepared)
                if t not in stop and not _TOKEN_DROP.match(t)]

    def spans_prepared(self, prepared: str) -> list[tuple[str, int, int]]:
        """The tokens `cut_prepared` gives, each with its (start, end) in `prepared`."""
        stop = self.stopwords
        out, pos = [], 0
        for t in _engine(self.engine, self.userdict)(prepared):
            start = prepared.find(t, pos)
            start = pos if start < 0 else start  # an engine that rewrote a piece: stay in step
            pos = start + len(t)
            if t not in stop and not _TOKEN_DROP.match(t):
                out.append((t, start, pos))
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Segmenter) and (self.engine, self.userdict, self.stopwords) == (
            other.engine, other.userdict, other.stopwords)

    def __hash__(self) -> int:
        return hash((self.engine, self.userdict))
