"""The report's charts, drawn with matplotlib and returned as SVG text.

SVG inline in the HTML and vector in the PDF (WeasyPrint draws inline SVG as vector). Text
stays text (``svg.fonttype = none``) so the PDF's words can be searched and the language
test sees every label; the font is DejaVu Sans, which ships with matplotlib and with Debian,
so a chart looks the same on every machine. Every chart carries the document's source line.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot's: no global figure registry
to leak into or share between the worker threads that render reports (the settings of
:func:`style` are still process-wide while a chart is drawn).
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import matplotlib.colors
import matplotlib.lines
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.i18n import Lang

#: Printed width of a full-width figure: the A4 text block (210 mm - 2 x 18 mm) in inches.
WIDTH_IN = 6.8
ACCENT = "#c0392b"  # the period, increases
INK = "#222222"
MUTED = "#6b6b6b"
FEMALE, MALE = "#b2547a", "#2f6f8f"

SVG_FONTS = "'Report DejaVu Sans', 'DejaVu Sans', sans-serif"

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "axes.edgecolor": "#999999",
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "xtick.color": INK,
    "ytick.color": INK,
    "text.color": INK,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "svg.fonttype": "none",
    "svg.hashsalt": "observatory-report",  # the same ids in the same chart on every run
}


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for this block only (no global state changed)."""
    with matplotlib.rc_context(RC):
        yield


def to_svg(fig: Figure, title: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog), titled for screen readers.

    Each figure's element ids get a prefix from its title so that two charts inlined in one
    HTML page never share an id.
    """
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # The report's own font first (see reports.render.FONT_FAMILY), DejaVu Sans after it.
    svg = svg.replace("font-family: 'DejaVu Sans'", f"font-family: {SVG_FONTS}")
    prefix = f"f{zlib.crc32(title.encode()):08x}"
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}-{m[1]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m[1]})", svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m[1]}"', svg)
    label = _escape(title)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
    return re.sub(r"(<svg[^>]*>)", rf"\1<title>{label}</title>", svg, count=1)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def source(fig: Figure, lang: Lang, line: str) -> None:
    """The source line under the figure, left-aligned, small and grey."""
    if line:
        fig.text(
            0.01,
            0.01,
            lang.source(line),
            fontsize=6.5,
            color=MUTED,
            ha="left",
            va="bottom",
        )


def wide(frame: pd.DataFrame, index: str, columns: str) -> pd.DataFrame:
    """``count`` by ``index`` (rows) and ``columns``, first-seen order; a withheld count
    stays missing (``pivot_table``'s sum would turn it into 0)."""
    grouped = frame.groupby([index, columns], sort=False)["count"].sum(min_count=1)
    table = grouped.unstack(columns)
    return table.reindex(
        index=list(dict.fromkeys(frame[index])), columns=list(dict.fromkeys(frame[columns]))
    )


# -- trend ------------------------------------------------------------------------------


def trend(monthly: pd.DataFrame, lang: Lang, source_line: str = "") -> str:
    """Monthly counts over three years, one panel per group, the report period shaded."""
    groups = list(dict.fromkeys(monthly["group"]))
    months = sorted(monthly["month"].unique())
    position = {m: i for i, m in enumerate(months)}
    in_period = sorted(monthly.loc[monthly["in_period"].astype(bool), "month"].unique())
    # five measures and the period's table still fit one A4 page
    panel = 1.75 if len(groups) <= 3 else max(0.85, 5.5 / len(groups))
    with style():
        fig = Figure(figsize=(WIDTH_IN, 0.5 + panel * len(groups)))
        axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)
        for ax, group in zip(axes[:, 0], groups, strict=True):
            rows = monthly[monthly["group"] == group].sort_values("month")
            x = rows["month"].map(position).to_numpy()
            y = rows["count"].to_numpy(dtype=float)
            if in_period:
                ax.axvspan(
                    position[in_period[0]] - 0.5,
                    position[in_period[-1]] + 0.5,
                    color=ACCENT,
                    alpha=0.1,
                    lw=0,
                )
            # a line without a dot per month: 36 markers a panel are each an SVG <use>
            # that WeasyPrint lays out apart (memory), and the line reads the same
            ax.plot(x, y, color="#4a4a4a", lw=1.2)
            alone = np.isfinite(y) & ~_neighboured(y)  # between withheld months: a dot
            ax.plot(x[alone], y[alone], color="#4a4a4a", lw=0, marker="o", ms=2.2)
            period = rows["in_period"].astype(bool).to_numpy()
            ax.plot(x[period], y[period], color=ACCENT, lw=0, marker="o", ms=3.6)
            ax.set_title(lang.term(group), loc="left", fontweight="bold")
            top = np.nanmax(y) if np.isfinite(y).any() else 1.0  # all withheld: an empty panel
            ax.set_ylim(bottom=0, top=max(1.0, top) * 1.15)
            ax.yaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: lang.integer(v))
            )
            ax.grid(axis="y", color="#e3e3e3", lw=0.5)
            ax.set_axisbelow(True)
        bottom = axes[-1, 0]
        ticks = [i for i, m in enumerate(months) if int(m[5:7]) in (1, 4, 7, 10)]
        bottom.set_xticks(ticks)
        bottom.set_xticklabels([_month_tick(months[i], lang) for i in ticks])
        bottom.set_xlim(-0.7, len(months) - 0.3)
        axes[0, 0].text(
            1.0, 1.02, lang("chart.trend.period"), transform=axes[0, 0].transAxes, ha="right",
            va="bottom", fontsize=7.5, color=ACCENT,
        )  # fmt: skip
        fig.supylabel(lang("chart.trend.y"), fontsize=8, x=0.01)
        fig.tight_layout(rect=(0.02, 0.04, 1, 1))
        source(fig, lang, source_line)
        return to_svg(fig, lang("chart.trend"))


def _month_tick(month: str, lang: Lang) -> str:
    name = lang.month_name(int(month[5:7]), "abbreviated").rstrip(".")
    return f"{name}\n{month[:4]}" if month[5:7] == "01" else name


# -- victims ----------------------------------------------------------------------------


def pyramid(by_sex_age: pd.DataFrame, lang: Lang, source_line: str = "") -> str:
    """Victims by age group, women to the left and men to the right (a population pyramid)."""
    ages = list(dict.fromkeys(by_sex_age["age_group"]))
    table = wide(by_sex_age, "age_group", "sex")
    table = table.reindex(ages)
    # A withheld count (missing) draws no bar and prints a dash, never a zero.
    female = table.get("female", pd.Series(np.nan, index=ages)).to_numpy(dtype=float)
    male = table.get("male", pd.Series(np.nan, index=ages)).to_numpy(dtype=float)
    y = np.arange(len(ages))
    with style():
        fig = Figure(figsize=(WIDTH_IN, 0.9 + 0.36 * len(ages)))
        ax = fig.subplots()
        ax.barh(y, -np.nan_to_num(female), color=FEMALE, height=0.72, label=lang.term("female"))
        ax.barh(y, np.nan_to_num(male), color=MALE, height=0.72, label=lang.term("male"))
        peak = max(1.0, np.nanmax(female, initial=0), np.nanmax(male, initial=0))
        for yi, f, m in zip(y, female, male, strict=True):
            f0, m0 = np.nan_to_num(f), np.nan_to_num(m)
            ax.text(-f0 - peak * 0.02, yi, lang.integer(f), ha="right", va="center", fontsize=7)
            ax.text(m0 + peak * 0.02, yi, lang.integer(m), ha="left", va="center", fontsize=7)
        ax.set_xlim(-peak * 1.22, peak * 1.22)
        ax.set_yticks(y)
        ax.set_yticklabels([lang.term(a) for a in ages])
        ax.axvline(0, color="#999999", lw=0.6)
        ax.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: lang.integer(abs(v)))
        )
        ax.set_xlabel(lang("chart.pyramid.x"))
        ax.set_ylabel(lang("col.age_group"))
        ax.text(
            0.25,
            1.02,
            lang.term("female"),
            transform=ax.transAxes,
            ha="center",
            color=FEMALE,
            fontweight="bold",
        )
        ax.text(
            0.75,
            1.02,
            lang.term("male"),
            transform=ax.transAxes,
            ha="center",
            color=MALE,
            fontweight="bold",
        )
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        source(fig, lang, source_line)
        return to_svg(fig, lang("chart.pyramid"))


# -- when -------------------------------------------------------------------------------


def heat(weekday_hour: pd.DataFrame, lang: Lang, source_line: str = "") -> str:
    """Day of week (rows, Monday first) by hour of day (columns), darker is more incidents."""
    grid = (
        wide(weekday_hour, "weekday", "hour")
        .reindex(index=range(7), columns=range(24))
        .to_numpy(dtype=float)
    )
    with style():
        fig = Figure(figsize=(WIDTH_IN, 3.0))
        ax = fig.subplots()
        # pcolormesh, not imshow: cells stay vector (imshow would embed a PNG in the SVG).
        # A few discrete steps: easier to read than a gradient, and the colour bar stays
        # vector (matplotlib rasterises a colour bar of 50 or more steps).
        top = max(1.0, float(np.nanmax(grid)) if np.isfinite(grid).any() else 1.0)
        levels = matplotlib.ticker.MaxNLocator(nbins=8, integer=True).tick_values(0, top)
        norm = matplotlib.colors.BoundaryNorm(levels, ncolors=256)
        image = ax.pcolormesh(
            np.arange(-0.5, 24), np.arange(-0.5, 7), np.ma.masked_invalid(grid), cmap="YlOrRd",
            norm=norm, edgecolors="white", linewidth=0.4,
        )  # fmt: skip
        ax.invert_yaxis()
        ax.set_xticks(range(0, 24, 2))
        ax.set_xticklabels([f"{h:02d}" for h in range(0, 24, 2)])
        ax.set_yticks(range(7))
        ax.set_yticklabels([lang.weekday(d) for d in range(7)])
        ax.set_xlabel(lang("chart.heat.x"))
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.015)
        bar.set_label(lang("chart.heat.legend"))
        bar.outline.set_visible(False)
        bar.ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: lang.integer(v))
        )
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        source(fig, lang, source_line)
        return to_svg(fig, lang("chart.heat"))


# -- where: the open alerts' series -------------------------------------------------------

#: Alerts drawn as small multiples; the others are in the alerts table and the bundle.
MAX_ALERT_PANELS = 6
#: Periods a panel draws (the latest): a year of weeks; the bundle has the whole series.
LAST_PERIODS = 53


def chosen_alerts(alerts: pd.DataFrame, limit: int = MAX_ALERT_PANELS) -> list[int]:
    """The alerts to draw: the strongest first (observed over threshold; a withheld
    observed count last), then the most recent (highest id), at most ``limit``."""
    if not len(alerts):
        return []
    ratio = alerts["observed"].astype(float) / alerts["threshold"].astype(float).where(
        alerts["threshold"].astype(float) > 0
    )
    order = alerts.assign(_ratio=ratio.fillna(-1.0)).sort_values(
        ["_ratio", "alert_id"], ascending=[False, False]
    )
    return [int(a) for a in order["alert_id"].head(limit)]


def _neighboured(values: np.ndarray) -> np.ndarray:
    """Whether each value has a finite neighbour (a line segment reaches it)."""
    finite = np.isfinite(values)
    left = np.r_[False, finite[:-1]]
    right = np.r_[finite[1:], False]
    return left | right


def alert_series(
    series: pd.DataFrame, alerts: pd.DataFrame, lang: Lang, source_line: str = ""
) -> str:
    """Small multiples, one panel per alert of :func:`chosen_alerts` ("" when none has
    most of its observed counts shown): the observed counts
    (a withheld one: a gap), the expected count (dashed) and the alarm threshold (dotted),
    the periods in alarm marked red."""
    # An alert whose observed counts are mostly withheld (a public report's small counts)
    # would draw a panel without its line: the table lists it, no panel is drawn.
    shown = series.groupby("alert_id")["observed"].agg(lambda v: v.notna().mean())
    drawable = alerts[alerts["alert_id"].map(shown).fillna(0) >= 0.5]
    ids = chosen_alerts(drawable)
    if not ids:
        return ""
    about = alerts.set_index("alert_id")
    columns = 2 if len(ids) > 1 else 1
    rows = (len(ids) + columns - 1) // columns
    with style():
        fig = Figure(figsize=(WIDTH_IN, 0.7 + 1.75 * rows))
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes[len(ids) :]:
            ax.set_visible(False)
        for ax, alert_id in zip(axes, ids, strict=False):
            # the last year at most: two years of weeks are too dense for a small panel
            points = series[series["alert_id"] == alert_id].tail(LAST_PERIODS)
            x = np.arange(len(points))
            observed = points["observed"].to_numpy(dtype=float)
            # the observed line without a dot per period (see trend); a lone shown count
            # between withheld ones still gets one, or it would not be drawn at all
            ax.plot(x, observed, color="#4a4a4a", lw=1.0)
            alone = np.isfinite(observed) & ~_neighboured(observed)
            ax.plot(x[alone], observed[alone], color="#4a4a4a", lw=0, marker="o", ms=1.6)
            ax.plot(x, points["expected"].to_numpy(dtype=float), color=MUTED, lw=0.9, ls="--")
            ax.plot(x, points["threshold"].to_numpy(dtype=float), color=ACCENT, lw=0.8, ls=":")
            alarm = points["alarm"].astype(bool).to_numpy()
            ax.plot(x[alarm], observed[alarm], color=ACCENT, lw=0, marker="o", ms=3.4)
            labels = points["period"].astype(str).tolist()
            step = max(1, len(labels) // 4)
            ticks = list(range(0, len(labels), step))
            ax.set_xticks(ticks)
            ax.set_xticklabels([labels[i] for i in ticks], fontsize=6.5)
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4, integer=True))
            ax.yaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: lang.integer(v))
            )
            ax.grid(axis="y", color="#e3e3e3", lw=0.5)
            row = about.loc[alert_id]
            place = str(row.get("place", ""))
            ax.set_title(
                f"{lang('col.alert_id')} {alert_id}: {place}, {row.get('period', '')}",
                loc="left", fontsize=8,
            )  # fmt: skip
        line = matplotlib.lines.Line2D
        handles = [
            line([], [], color="#4a4a4a", lw=1.0, label=lang("col.observed")),
            line([], [], color=MUTED, lw=0.9, ls="--", label=lang("col.expected")),
            line([], [], color=ACCENT, lw=0.8, ls=":", label=lang("col.threshold")),
            line([], [], color=ACCENT, lw=0, marker="o", ms=3.4, label=lang("chart.alarm")),
        ]
        fig.legend(handles=handles, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0.04, 1, 0.94))
        source(fig, lang, source_line)
        return to_svg(fig, lang("chart.alert_series"))
