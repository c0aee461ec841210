"""The dashboard's pictures as SVG, drawn on the server (no plotting library, nothing fetched by the browser).

Every mark carries its value in ``data-*`` attributes (what a test, or a curious user, reads back) and a
``<title>`` (the tooltip); colours come from classes the page's theme (``ui/theme.py``) styles, light or dark.
Pure string building, every text escaped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

CHAR_WIDTH = 7  # about, at font-size 12


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-size="12">' + "".join(body) + "</svg>"
    )


def _hm(epoch: float) -> str:
    return time.strftime("%H:%M", time.gmtime(epoch))


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def deadline_note(row: Mapping[str, Any], now: float) -> str:
    """What the bar's label says: against the deadline when there is one, else when it finished."""
    end, deadline = row.get("end"), row.get("deadline")
    if end is None:
        if deadline is None:
            return f"{row['status']}, {_duration(now - row['start'])} so far"
        left = deadline - now
        when = f"in {_duration(left)}" if left >= 0 else f"passed {_duration(left)} ago"
        return f"{row['status']}: deadline {when}"
    finished = f"{'failed' if row['status'] == 'failed' else 'finished'} {_hm(end)} UTC"
    if deadline is None:
        return finished
    margin = deadline - end
    against = f"{_duration(margin)} before its deadline" if margin >= 0 else f"late by {_duration(margin)}"
    return f"{finished}, {against}"


def runs_against_deadlines_svg(rows: Sequence[Mapping[str, Any]], *, now: float, width: int = 900) -> str:
    """One bar per run from its start (its first capacity wait included) to its end (or now, still going),
    its deadline a mark on the same row. ``rows``: ``{"label", "status", "start", "end", "deadline"}``."""
    top, row_h, right = 24, 26, 300
    left = min(320, max(140, 16 + CHAR_WIDTH * max((len(r["label"]) for r in rows), default=10)))
    t0 = min(float(r["start"]) for r in rows)
    t1 = max([now] + [float(r["deadline"]) for r in rows if r.get("deadline") is not None])
    span = max(t1 - t0, 60.0)
    scale = (width - left - right) / span

    def x(t: float) -> float:
        return left + (t - t0) * scale

    body = []
    for i, r in enumerate(rows):
        y = top + i * row_h
        start, end = float(r["start"]), float(r["end"] if r.get("end") is not None else now)
        deadline = r.get("deadline")
        late = deadline is not None and end > float(deadline)
        note = deadline_note(r, now)
        body.append(f'<text x="8" y="{y + 15}" class="label">{escape(r["label"])}</text>')
        body.append(
            f'<rect class="mark s-{escape(r["status"])}{" late" if late else ""}" x="{x(start):.1f}" y="{y + 4}" '
            f'width="{max(x(end) - x(start), 2):.1f}" height="14" rx="3" data-run="{escape(r["label"])}" '
            f'data-status="{escape(r["status"])}" data-start="{start:.0f}" data-end="{end:.0f}" '
            f'data-deadline="{"" if deadline is None else f"{float(deadline):.0f}"}" data-late="{str(late).lower()}">'
            f"<title>{escape(r['label'])}: {_hm(start)} to {_hm(end)} UTC; {escape(note)}</title></rect>"
        )
        if deadline is not None:
            dx = x(float(deadline))
            body.append(
                f'<line class="deadline" x1="{dx:.1f}" x2="{dx:.1f}" y1="{y}" y2="{y + 22}" stroke-width="3">'
                f"<title>deadline {_hm(float(deadline))} UTC</title></line>"
            )
        body.append(
            f'<text x="{width - right + 10}" y="{y + 15}" class="{"late" if late else "note"}">{escape(note)}</text>'
        )
    axis_y = top + len(rows) * row_h + 4
    body.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}"/>')
    step = next(s for s in (600, 1800, 3600, 7200, 10800, 21600, 43200, 86400) if span / s <= 8)
    tick = (t0 // step + 1) * step
    while tick <= t1:
        body.append(f'<text x="{x(tick):.1f}" y="{axis_y + 16}" text-anchor="middle" class="tick">{_hm(tick)}</text>')
        tick += step
    nx = x(now)
    body.append(f'<line class="now" x1="{nx:.1f}" x2="{nx:.1f}" y1="{top - 6}" y2="{axis_y}"><title>now</title></line>')
    return _svg(width, axis_y + 26, "runs against their deadlines", body)


def cost_per_day_svg(days: Sequence[Mapping[str, Any]], *, width: int = 900, height: int = 220) -> str:
    """Per day, what the spot sessions cost next to what the same hours would have cost on demand, and the
    saving above. ``days``: ``{"day": "YYYY-MM-DD", "spot_usd", "on_demand_usd"}`` in order."""
    top, bottom, left = 28, 40, 60
    plot_h = height - top - bottom
    top_value = max([0.01] + [float(d["on_demand_usd"]) for d in days] + [float(d["spot_usd"]) for d in days])
    slot = (width - left - 10) / max(len(days), 1)
    bar_w = max(2.0, min(28.0, slot * 0.38))
    body = [
        f'<line class="axis" x1="{left}" x2="{width - 10}" y1="{top + plot_h}" y2="{top + plot_h}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="tick">{top_value:.2f}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>',
        f'<text x="4" y="{top - 12}" class="tick">USD</text>',
    ]
    label_every = max(1, round(len(days) / 14))
    for i, d in enumerate(days):
        cx = left + slot * i + slot / 2
        for offset, series, value in ((-bar_w, "spot", d["spot_usd"]), (0.0, "on-demand", d["on_demand_usd"])):
            h = plot_h * float(value) / top_value
            body.append(
                f'<rect class="mark c-{series}" x="{cx + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" data-day="{escape(d["day"])}" data-series="{series}" '
                f'data-value="{float(value):.4f}">'
                f"<title>{escape(d['day'])}: {series} {float(value):.4f} USD</title></rect>"
            )
        saved = float(d["on_demand_usd"]) - float(d["spot_usd"])
        if saved > 0 and slot >= 40:
            body.append(
                f'<text x="{cx:.1f}" y="{top + plot_h - plot_h * float(d["on_demand_usd"]) / top_value - 4:.1f}" '
                f'text-anchor="middle" class="saved" data-day="{escape(d["day"])}">{saved:.2f} saved</text>'
            )
        if i % label_every == 0:
            body.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
                f"{escape(d['day'][5:])}</text>"
            )
    ly = height - 8
    body.append(f'<rect class="c-spot" x="{left}" y="{ly - 10}" width="12" height="12"/>')
    body.append(f'<text x="{left + 16}" y="{ly}" class="tick">spot (paid)</text>')
    body.append(f'<rect class="c-on-demand" x="{left + 110}" y="{ly - 10}" width="12" height="12"/>')
    body.append(f'<text x="{left + 126}" y="{ly}" class="tick">the same hours on demand</text>')
    body.append(f'<text x="{left + 310}" y="{ly}" class="saved">above the bars: USD saved that day</text>')
    return _svg(width, height, "cost and savings per day", body)


def per_pool_svg(pools: Sequence[Mapping[str, Any]], *, width: int = 900) -> str:
    """Per capacity pool (instance type and zone): interruptions (left) and minutes waited for capacity
    (right) as horizontal bars. ``pools``: ``{"pool", "interruptions", "waited_seconds", "sessions"}``."""
    top, row_h = 22, 24
    left = max(150, 16 + CHAR_WIDTH * max((len(p["pool"]) for p in pools), default=10))
    half = (width - left - 20) / 2
    most_i = max([1] + [int(p["interruptions"]) for p in pools])
    most_w = max([60.0] + [float(p["waited_seconds"]) for p in pools])
    body = [
        f'<text x="{left}" y="14" class="tick">interruptions</text>',
        f'<text x="{left + half + 20}" y="14" class="tick">capacity waited</text>',
    ]
    for i, p in enumerate(pools):
        y = top + i * row_h
        n, waited = int(p["interruptions"]), float(p["waited_seconds"])
        wi = (half - 60) * n / most_i
        ww = (half - 70) * waited / most_w
        body.append(f'<text x="8" y="{y + 14}" class="label">{escape(p["pool"])}</text>')
        body.append(
            f'<rect class="mark c-interruptions" x="{left}" y="{y + 3}" width="{wi:.1f}" height="14" '
            f'data-pool="{escape(p["pool"])}" data-series="interruptions" data-value="{n}">'
            f"<title>{escape(p['pool'])}: {n} interruptions in {int(p.get('sessions') or 0)} sessions</title></rect>"
        )
        body.append(f'<text x="{left + wi + 4:.1f}" y="{y + 14}" class="note">{n}</text>')
        wx = left + half + 20
        body.append(
            f'<rect class="mark c-wait" x="{wx}" y="{y + 3}" width="{ww:.1f}" height="14" '
            f'data-pool="{escape(p["pool"])}" data-series="waited_seconds" data-value="{waited:.0f}">'
            f"<title>{escape(p['pool'])}: waited {_duration(waited)} for capacity</title></rect>"
        )
        body.append(f'<text x="{wx + ww + 4:.1f}" y="{y + 14}" class="note">{_duration(waited)}</text>')
    return _svg(width, top + len(pools) * row_h + 8, "interruptions and capacity waits per pool", body)


def budgets_svg(rows: Sequence[Mapping[str, Any]], *, width: int = 900) -> str:
    """How much of each budget the runs still going have used: one bar per (run, budget), full = spent.
    ``rows``: ``{"label", "budget", "used", "limit", "close"}``."""
    top, row_h = 8, 24
    labels = [f"{r['label']} · {r['budget']}" for r in rows]
    left = max(200, 16 + CHAR_WIDTH * max((len(t) for t in labels), default=10))
    track = width - left - 120
    body = []
    for i, (r, text) in enumerate(zip(rows, labels, strict=True)):
        y = top + i * row_h
        used, limit = int(r["used"]), max(int(r["limit"]), 0)
        fraction = 1.0 if limit == 0 else min(1.0, used / limit)
        body.append(f'<text x="8" y="{y + 14}" class="label">{escape(text)}</text>')
        body.append(f'<rect class="track" x="{left}" y="{y + 3}" width="{track}" height="14" rx="3"/>')
        body.append(
            f'<rect class="mark {"c-close" if r["close"] else "c-budget"}" x="{left}" y="{y + 3}" '
            f'width="{track * fraction:.1f}" height="14" rx="3" data-run="{escape(r["label"])}" '
            f'data-budget="{escape(r["budget"])}" data-used="{used}" data-limit="{limit}" '
            f'data-close="{str(bool(r["close"])).lower()}"><title>{escape(text)}: {used} of {limit} used</title></rect>'
        )
        body.append(f'<text x="{left + track + 8}" y="{y + 14}" class="note">{used} of {limit} used</text>')
    return _svg(width, top + len(rows) * row_h + 6, "budgets used by the runs still going", body)


CHART_CSS = """
svg.chart{display:block;max-width:100%;height:auto;margin:4px 0 10px}
svg.chart text{fill:var(--fg)}svg.chart text.tick,svg.chart text.note{fill:var(--fg-muted)}
svg.chart text.late{fill:var(--failed)}svg.chart text.saved{fill:var(--success-fg)}
svg.chart .axis{stroke:var(--border-emphasized)}svg.chart .now{stroke:var(--accent);stroke-dasharray:3 3}
svg.chart .deadline{stroke:var(--fg)}svg.chart .track{fill:var(--bg-muted)}
.s-succeeded,.c-spot{fill:var(--success)}.s-failed,.c-close{fill:var(--failed)}.s-running{fill:var(--running)}
.s-waiting{fill:var(--deferred)}.c-on-demand{fill:var(--on-demand)}.c-interruptions,.c-budget{fill:var(--warning)}
.c-wait{fill:var(--wait)}rect.late{stroke:var(--failed);stroke-width:2}
"""
