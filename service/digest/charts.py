"""The digest's charts as PNG bytes (matplotlib, Agg, no pyplot: safe in server threads).

Chinese labels need a CJK font. One is looked up once: a known family matplotlib already knows, or
any font fontconfig lists for `:lang=zh` (Debian's fonts-wqy-microhei, which `make install` adds).
Without one, bars are labelled by rank number (the tables beside the charts carry the names), so a
chart never shows empty boxes in place of characters.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import subprocess
import threading
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from service.digest.schema import WeeklyDigest  # noqa: E402

log = logging.getLogger("xiaobao.service.digest")

KNOWN_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
                      "WenQuanYi Zen Hei", "Microsoft YaHei", "SimHei", "PingFang SC", "Heiti SC",
                      "Hiragino Sans GB", "Arial Unicode MS")
BLUE, RED, GREY = "#2f5d8a", "#c0392b", "#9aa5b1"
DPI = 110
# matplotlib's shared state (font cache, rcParams) is not made for concurrent renders.
_LOCK = threading.Lock()


@functools.cache
def cjk_font() -> str | None:
    """The family name of a font with Chinese glyphs, or None."""
    family = _find_cjk_font()
    if family:
        # Set once for the process: the CJK family first, DejaVu after it for any glyph it lacks.
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["font.sans-serif"] = [family, *matplotlib.rcParams["font.sans-serif"]]
        matplotlib.rcParams["axes.unicode_minus"] = False
    else:
        log.warning("no Chinese font found (install fonts-wqy-microhei); digest charts label bars by number")
    return family


def _find_cjk_font() -> str | None:
    known = {f.name for f in font_manager.fontManager.ttflist}
    for family in KNOWN_CJK_FAMILIES:
        if family in known:
            return family
    if shutil.which("fc-list"):
        try:
            listing = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                                     timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in sorted(listing.splitlines()):
            path = line.split(":")[0].strip()
            if not path.lower().endswith((".ttf", ".ttc", ".otf")):
                continue
            try:
                font_manager.fontManager.addfont(path)  # a font installed after matplotlib built its cache
                return font_manager.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def _labels(names: Sequence[str]) -> list[str]:
    return list(names) if cjk_font() else [f"#{i + 1}" for i in range(len(names))]


def _title(text: str, fallback: str) -> str:
    return text if cjk_font() else fallback


def _figure(width: float, height: float) -> Figure:
    cjk_font()
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _style(ax, grid: str) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    ax.grid(axis=grid, color="#e5e8eb", linewidth=0.8)
    ax.set_axisbelow(True)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def trend_chart(digest: WeeklyDigest) -> bytes:
    """Bars: requests per week over the last 12 weeks; line: high-risk requests; this week highlighted."""
    fig = _figure(7.2, 3.0)
    ax = fig.add_subplot()
    weeks = [w.week.split("-")[1] for w in digest.volume.trend]
    counts = [w.count for w in digest.volume.trend]
    colors = [GREY] * (len(weeks) - 1) + [BLUE]
    bars = ax.bar(weeks, counts, color=colors, width=0.65, label=_title("投诉量", "requests"))
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.plot(weeks, [w.high_risk for w in digest.volume.trend], color=RED, marker="o", linewidth=1.8,
            markersize=4, label=_title("高风险", "high risk"))
    ax.set_title(_title(f"近12周投诉量趋势（截至 {digest.week}）", f"Requests per week to {digest.week}"),
                 fontsize=11, loc="left")
    ax.set_ylim(0, max(counts + [1]) * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    # Above the plot, right of the title: inside it would cover the first bars' labels.
    ax.legend(frameon=False, fontsize=9, loc="lower right", bbox_to_anchor=(1, 1), ncol=2, borderaxespad=0.2)
    _style(ax, "y")
    return _png(fig)


def bar_chart(title: str, fallback_title: str, labels: Sequence[str], current: Sequence[int],
              previous: Sequence[int] | None = None, limit: int = 12) -> bytes:
    """Horizontal bars, largest on top; the previous week as a thin grey bar where given."""
    labels, current = list(labels)[:limit], list(current)[:limit]
    n = max(len(labels), 1)
    fig = _figure(7.2, 0.8 + 0.32 * n)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    bars = ax.barh(ys, current, height=0.6, color=BLUE, label=_title("本周", "this week"))
    ax.bar_label(bars, fontsize=8, padding=3)
    if previous is not None:
        ax.barh([y - 0.36 for y in ys], list(previous)[:limit], height=0.14, color=GREY,
                label=_title("上周", "last week"))
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_yticks(ys, _labels(labels))
    ax.set_xlim(0, max(list(current) + list(previous or [])[:limit] + [1]) * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(_title(title, fallback_title), fontsize=11, loc="left")
    _style(ax, "x")
    return _png(fig)


def branch_chart(digest: WeeklyDigest, limit: int = 15) -> bytes:
    """Branches by volume, the high-risk part of each bar in red."""
    rows = digest.branches[:limit]
    n = max(len(rows), 1)
    fig = _figure(7.2, 0.8 + 0.3 * n)
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r.count - r.high_risk for r in rows], left=[r.high_risk for r in rows], height=0.6,
            color=BLUE, label=_title("其他", "other"))
    ax.barh(ys, [r.high_risk for r in rows], height=0.6, color=RED, label=_title("高风险", "high risk"))
    for y, r in zip(ys, rows, strict=True):
        ax.text(r.count, y, f" {r.count}", va="center", fontsize=8)
    ax.set_yticks(ys, _labels([f"{r.rank}. {r.branch}" for r in rows]))
    ax.set_xlim(0, max([r.count for r in rows] + [1]) * 1.12)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(_title(f"网点投诉量排名（前{len(rows)}）", f"Branches by volume (top {len(rows)})"),
                 fontsize=11, loc="left")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    _style(ax, "x")
    return _png(fig)


def score_chart(digest: WeeklyDigest) -> bytes:
    """This week's risk-score distribution against the model's training reference."""
    health = digest.model_health
    fig = _figure(7.2, 2.6)
    ax = fig.add_subplot()
    centres = [i / 10 + 0.05 for i in range(10)]
    ax.bar([c - 0.02 for c in centres], health.histogram, width=0.04, color=BLUE, label=_title("本周", "this week"))
    if health.reference_histogram:
        ax.bar([c + 0.02 for c in centres], health.reference_histogram, width=0.04, color=GREY,
               label=_title("训练参考", "training reference"))
    psi = "–" if health.psi is None else f"{health.psi:.3f}"
    flag = _title("（漂移）", " (drift)") if health.drift else ""
    ax.set_title(_title(f"风险评分分布  PSI = {psi}{flag}", f"Risk score distribution  PSI = {psi}{flag}"),
                 fontsize=11, loc="left", color=RED if health.drift else "black")
    ax.set_xticks([i / 10 for i in range(11)])
    ax.set_xlim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend(frameon=False, fontsize=8)
    _style(ax, "y")
    return _png(fig)


def all_charts(digest: WeeklyDigest) -> dict[str, bytes]:
    """Every chart of the digest by name: trend, categories, causes, branches, scores."""
    with _LOCK:
        return _all_charts(digest)


def _all_charts(digest: WeeklyDigest) -> dict[str, bytes]:
    return {
        "trend": trend_chart(digest),
        "categories": bar_chart("业务大类（本周 / 上周）", "Categories (this / last week)",
                                [r.label for r in digest.categories], [r.count for r in digest.categories],
                                [r.previous for r in digest.categories]),
        "causes": bar_chart("投诉原因（本周 / 上周）", "Causes (this / last week)",
                            [r.label for r in digest.causes], [r.count for r in digest.causes],
                            [r.previous for r in digest.causes]),
        "branches": branch_chart(digest),
        "scores": score_chart(digest),
    }
