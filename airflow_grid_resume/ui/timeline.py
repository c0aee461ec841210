"""A picture of a run's timeline as SVG (no plotting library needed): capacity waits, each
session's instance, the checkpoints it committed, and how it ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from airflow_grid_resume.ledger.status import SessionStatus, counts_as_interruption

COLORS = {"succeeded": "#2e9d4a", "interrupted": "#e8a33d", "lost": "#c8423b", "failed": "#8b1e3f"}
WAIT = "#b8c2cc"
CHECKPOINT = "#1f3b73"
ROW, LEFT, RIGHT, TOP = 34, 150, 80, 40
CHAR_WIDTH = 7  # about, at font-size 12: the label column fits the longest label
# Inside the plugin's pages the classes below take the theme's colours (ui/theme.py) over the fills above, which
# stay for the picture on its own (the demo's timeline.svg).
TIMELINE_CSS = """
svg.timeline .tl-bg{fill:var(--bg)}svg.timeline text{fill:var(--fg)}svg.timeline .tl-axis{stroke:var(--fg-muted)}
svg.timeline .tl-succeeded{fill:var(--success)}svg.timeline .tl-interrupted{fill:var(--warning)}
svg.timeline .tl-lost,svg.timeline .tl-failed{fill:var(--failed)}svg.timeline .tl-running{fill:var(--running)}
svg.timeline .tl-wait{fill:var(--wait)}svg.timeline .tl-checkpoint{stroke:var(--accent);fill:var(--accent)}
svg.timeline text.tl-interrupted{fill:var(--warning)}svg.timeline text.tl-lost{fill:var(--failed)}
"""


def timeline_svg(sessions: Sequence[Mapping[str, Any]], *, title: str, width: int = 900) -> str:
    """``sessions``: ``{"session", "status", "instance_type", "lifecycle", "wait_start", "start", "end",
    "checkpoints": [times]}`` with times in epoch seconds. One row per session, time left to right."""
    if not sessions:
        raise ValueError("a timeline needs at least one session")
    t0 = min(float(s.get("wait_start") or s["start"]) for s in sessions)
    t1 = max(float(s["end"]) for s in sessions)
    span = max(t1 - t0, 1.0)
    labels = [f"session {s['session']} · {s.get('instance_type') or '?'} {s.get('lifecycle') or ''}" for s in sessions]
    left = max(LEFT, 20 + CHAR_WIDTH * max(len(label) for label in labels))
    scale = (width - left - RIGHT) / span

    def x(t: float) -> float:
        return left + (t - t0) * scale

    height = TOP + ROW * len(sessions) + 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12" class="timeline">',
        f'<rect class="tl-bg" width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for row, (s, label) in enumerate(zip(sessions, labels, strict=True)):
        y = TOP + row * ROW
        status = str(s["status"])
        out.append(f'<text x="10" y="{y + 17}">{escape(label)}</text>')
        if s.get("wait_start") is not None and float(s["wait_start"]) < float(s["start"]):
            w0, w1 = x(float(s["wait_start"])), x(float(s["start"]))
            out.append(
                f'<rect class="tl-wait" x="{w0:.1f}" y="{y + 8}" width="{w1 - w0:.1f}" height="8" fill="{WAIT}">'
            )
            out.append(f"<title>waiting for capacity: {float(s['start']) - float(s['wait_start']):.0f} s</title>")
            out.append("</rect>")
        b0, b1 = x(float(s["start"])), x(float(s["end"]))
        color = COLORS.get(status, "#777")
        out.append(
            f'<rect class="tl-{escape(status)}" x="{b0:.1f}" y="{y + 4}" width="{max(b1 - b0, 1):.1f}" height="16" '
            f'fill="{color}" rx="3">'
        )
        out.append(f"<title>{escape(status)}: {float(s['end']) - float(s['start']):.0f} s</title></rect>")
        for t in s.get("checkpoints") or ():
            cx = x(float(t))
            out.append(
                f'<line class="tl-checkpoint" x1="{cx:.1f}" y1="{y + 2}" x2="{cx:.1f}" y2="{y + 22}" stroke="#1f3b73" '
                'stroke-width="2"/>'
            )
        if counts_as_interruption(status):
            mark = "notice" if status == SessionStatus.INTERRUPTED else "no notice"
            out.append(
                f'<text class="tl-{escape(status)}" x="{b1 + 4:.1f}" y="{y + 17}" fill="{color}">✕ {mark}</text>'
            )
    axis_y = TOP + ROW * len(sessions) + 10
    out.append(f'<line class="tl-axis" x1="{left}" y1="{axis_y}" x2="{width - RIGHT}" y2="{axis_y}" stroke="#333"/>')
    step = next(s for s in (5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= 12)
    tick = 0.0
    while tick <= span:
        tx = x(t0 + tick)
        out.append(f'<line class="tl-axis" x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 5}" stroke="#333"/>')
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 18}" text-anchor="middle">{tick:.0f} s</text>')
        tick += step
    legend = [("waiting for capacity", WAIT), *((k, v) for k, v in COLORS.items() if k != "failed")]
    if any(str(s["status"]) == "running" for s in sessions):
        legend.append(("running", "#777"))
    lx = left
    classes = {"waiting for capacity": "wait"}
    for name, color in [*legend, ("checkpoint", CHECKPOINT)]:
        cls = f"tl-{classes.get(name, name)}"
        out.append(f'<rect class="{cls}" x="{lx}" y="{axis_y + 28}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 16}" y="{axis_y + 38}">{escape(name)}</text>')
        lx += 30 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"
