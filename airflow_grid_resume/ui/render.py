"""Server-rendered HTML of the run view and the fleet dashboard, from the view models of
``ui/model.py``. Pure string building (every value escaped), no JavaScript framework: a page that
is still live refreshes its own content every few seconds with one small inline script."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from airflow_grid_resume.ui import charts
from airflow_grid_resume.ui.theme import MODE_SCRIPT, theme_css
from airflow_grid_resume.ui.timeline import TIMELINE_CSS, timeline_svg

REFRESH_SECONDS = 5
# Airflow's fonts and colours (ui/theme.py), light or dark as Airflow's UI or the system chose.
STYLE = (
    theme_css()
    + """
body{font-size:14px;margin:12px}
h1{font-size:18px;margin:0 0 6px}h2{font-size:15px;margin:18px 0 6px}a{color:var(--link)}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid var(--border);padding:3px 8px;text-align:left}
th{background:var(--bg-muted)}.interruption{background:var(--warning-subtle)}.failure{background:var(--failed-subtle)}
.success{background:var(--success-subtle)}.running{background:var(--running-subtle)}
.state{font-size:15px;padding:8px;border-radius:4px;background:var(--bg-muted);margin:6px 0}
.marker{font-weight:bold;color:var(--warning-fg)}.muted{color:var(--fg-muted)}
.bar{height:10px;background:var(--border);width:320px}.bar>div{height:10px;background:var(--accent)}
code{font-size:12px;word-break:break-all}.id{white-space:nowrap}
input,button{font:inherit;color:var(--fg);background:var(--bg-subtle);border:1px solid var(--border-emphasized)}
"""
    + charts.CHART_CSS
    + TIMELINE_CSS
)
LIVE_SCRIPT = """<script>
setInterval(async () => {
  const r = await fetch(location.href, {credentials: "same-origin"});
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  const fresh = doc.getElementById("content");
  if (fresh) document.getElementById("content").replaceWith(fresh);
  if (!doc.getElementById("live")) location.reload();
}, %d);
setInterval(() => {  // countdowns by the page's own clock, from when this content arrived
  for (const el of document.querySelectorAll("[data-countdown]")) {
    if (!el.dataset.t0) el.dataset.t0 = String(performance.now());
    const left = Math.round(Number(el.dataset.countdown) - (performance.now() - Number(el.dataset.t0)) / 1000);
    el.textContent = left > 0 ? left + " s" : "a moment";
  }
}, 1000);
</script>"""


def _t(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(epoch)))


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f} USD"


def _bytes(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], test_id: str) -> str:
    """``rows``: (css class, cells already escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{escape(cls)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for cls, cells in rows
    )
    return f'<table data-testid="{test_id}"><tr>{head}</tr>{body}</table>'


def _instance(row: Mapping[str, Any]) -> str:
    """The instance id, linked to its own page when the view knows where (``instance_url``)."""
    text = escape(row.get("instance_id") or "-")
    if row.get("instance_url"):
        return f"<a class='id' target='_blank' rel='noopener' href='{escape(row['instance_url'])}'>{text}</a>"
    return f"<span class='id'>{text}</span>"


def _state_text(state: Mapping[str, Any]) -> str:
    """The state sentence, its countdown (if any) in an element the page's script counts down."""
    text = escape(state["text"])
    countdown = state.get("countdown")
    if not countdown:
        return text
    seconds = int(countdown["seconds"])
    label = escape(countdown["text"])
    ticking = label.replace(f"{seconds} s", f'<span data-countdown="{seconds}">{seconds} s</span>', 1)
    return text.replace(label, ticking, 1)


def page(title: str, content: str, *, live: bool) -> str:
    script = LIVE_SCRIPT % (REFRESH_SECONDS * 1000) if live else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"{MODE_SCRIPT}<style>{STYLE}</style></head><body><div id='content'>{content}"
        + ("<span id='live' hidden></span>" if live else "")
        + f"</div>{script}</body></html>"
    )


def _timeline(view: Mapping[str, Any], now: float) -> str:
    rows = []
    for s in view["sessions"]:
        if s["start"] is None:
            continue
        rows.append(
            {
                "session": s["session"],
                "status": s["status"],
                "instance_type": s["instance_type"],
                "lifecycle": s["lifecycle"],
                "wait_start": s["start"] - s["waited_seconds"],
                "start": s["start"],
                "end": s["end"] or now,
                "checkpoints": [
                    c["committed_at"] for c in view["checkpoints"] if c["session"] == s["session"] and c["committed_at"]
                ],
            }
        )
    if not rows:
        return "<p class='muted'>no session launched yet</p>"
    return timeline_svg(rows, title=f"{len(rows)} sessions", width=860)


def run_page(view: Mapping[str, Any], *, title: str, now: float) -> str:
    state = view["state"]
    live = state["phase"] in ("running", "waiting")
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>ledger: <code>{escape(str(view['run_uri']))}</code></div>",
    ]
    parts.append(f'<div class="state" data-testid="state">{_state_text(state)}</div>')
    deadline = view.get("deadline")
    if deadline and deadline.get("deadline_at"):
        decided = (
            f" <span class='muted'>(decided {_t(deadline['decided_at'])})</span>" if deadline.get("decided_at") else ""
        )
        parts.append(
            f"<div data-testid='deadline'>deadline {_t(deadline['deadline_at'])}; "
            f"expected runtime {float(deadline.get('expected_hours') or 0):.2f} h"
            + (f"<br>policy: {escape(deadline['decision'])}{decided}" if deadline.get("decision") else "")
            + "</div>"
        )
    answers = (state.get("wait") or {}).get("answers") or []
    if answers:
        parts.append("<h2>Capacity wait: EC2's last answers</h2>")
        parts.append(
            _table(
                ["instance type", "zone", "market", "answer", "EC2's message"],
                [
                    (
                        "interruption",
                        [
                            f"<span class='id'>{escape(str(a['instance_type']))}</span>",
                            f"<span class='id'>{escape(str(a['zone']))}</span>",
                            escape(str(a["lifecycle"] or "spot")),
                            escape(a["answer"]),
                            f"<span class='muted'>{escape(a['message'])}</span>",
                        ],
                    )
                    for a in answers
                ],
                "capacity-answers",
            )
        )
    if state.get("done") is not None and state.get("total"):
        pct = max(0.0, min(100.0, 100.0 * float(state["done"]) / float(state["total"])))
        eta = f", about {state['eta_seconds']:.0f} s to go" if state.get("eta_seconds") is not None else ""
        parts.append(
            f'<div data-testid="progress">step {state["done"]} of {state["total"]} ({pct:.0f} %){escape(eta)}'
            f'<div class="bar"><div style="width:{pct:.0f}%"></div></div></div>'
        )
    cost = view["cost"]
    b = view["budgets"]
    saved = f" ({cost['saved_percent']} % saved)" if cost.get("saved_percent") is not None else ""
    budget_text = []
    for name in ("interruptions", "failures"):
        left, limit = b.get(f"{name}_left"), b.get(f"{name}_limit")
        used = b.get(f"{name}_used")
        budget_text.append(
            f"{name}: {used} used" + (f", {left} of {limit} left" if limit is not None else " (no limit recorded)")
        )
    parts.append(
        "<p data-testid='totals'>"
        f"{len(view['sessions'])} sessions, {view['interruptions']} interruptions, "
        f"capacity waited {view['capacity_waited_seconds']:.0f} s"
        + (
            f", {'at least ' if view.get('steps_lost_at_least') else ''}{view['steps_lost']} steps redone "
            "after interruptions"
            if view.get("steps_lost") is not None
            else ""
        )
        + "<br>"
        + (
            f"<span data-testid='cost'>cost {_usd(cost['spot_usd'])} against {_usd(cost['on_demand_usd'])} on demand"
            f"{saved}"
            + (
                f", including {cost['transfer_usd']:.6f} USD of data transfer between regions"
                if cost.get("transfer_usd")
                else ""
            )
            + "</span>"
            if view["sessions"]
            else "<span data-testid='cost'>no cost yet: no instance launched</span>"
        )
        + "<br>"
        f"<span data-testid='budgets'>budgets: {escape('; '.join(budget_text))}</span></p>"
    )
    parts.append("<h2>Timeline</h2>" + _timeline(view, now))
    parts.append("<h2>Airflow tries</h2>")
    parts.append(
        _table(
            ["try", "Airflow state", "started", "session", "instance", "what ended it"],
            [
                (
                    t["kind"],
                    [
                        str(t["try_number"]),
                        escape(str(t["state"])),
                        _t(t["start"]),
                        escape(", ".join(map(str, t["sessions"])) or "-"),
                        _instance(t),
                        (
                            f"<span class='marker'>⚡ {escape(t['ended_by'])}</span>"
                            if t["kind"] == "interruption"
                            else escape(t["ended_by"])
                        ),
                    ],
                )
                for t in view["tries"]
            ],
            "tries",
        )
    )
    parts.append("<h2>Spot sessions</h2>")
    session_rows = []
    for s in view["sessions"]:
        price = f"{s['price_per_hour']:.4f} USD/h" if s["price_per_hour"] is not None else "?"
        lost = "-" if s.get("steps_lost") is None else escape(str(s["steps_lost"]))
        if s.get("steps_lost_at_least") and s.get("steps_lost") is not None:
            why = "the instance was lost: its last heartbeat's step, up to one heartbeat interval old, is all we know"
            lost = f"<span title='{escape(why)}'>at least {lost}</span>"
        steps = "-"
        if s["progress_last"] is not None:
            reached = f"≥ {s['progress_last']}" if s.get("progress_last_at_least") else str(s["progress_last"])
            steps = f"{s['progress_first'] if s['progress_first'] is not None else '?'} → {reached}"
        session_rows.append(
            (
                {"interrupted": "interruption", "lost": "interruption", "succeeded": "success"}.get(
                    s["status"], "running" if s["status"] == "running" else "failure"
                ),
                [
                    str(s["session"]),
                    _instance(s),
                    escape(str(s["instance_type"])),
                    f"<span class='id'>{escape(str(s.get('region') or '-'))}</span>",
                    f"<span class='id'>{escape(str(s['zone']))}</span>",
                    escape(s["lifecycle"]),
                    escape(price),
                    _t(s["start"]),
                    f"{s['seconds']:.0f} s",
                    f"<span class='id'>{escape(steps)}</span>",
                    lost,
                    escape(_usd(s["cost_usd"])) + _transfer_cell(s),
                    escape(s["ended_by"])
                    + (f"<br><span class='muted'>policy: {escape(s['policy'])}</span>" if s.get("policy") else ""),
                ],
            )
        )
    parts.append(
        _table(
            [
                "session",
                "instance",
                "type",
                "region",
                "zone",
                "market",
                "price",
                "launched",
                "ran",
                "steps",
                "steps lost",
                "cost",
                "ended by",
            ],
            session_rows,
            "sessions",
        )
    )
    resolved = next((s["resolved_types"] for s in reversed(view["sessions"]) if s.get("resolved_types")), None)
    if resolved:
        parts.append(
            "<p data-testid='resolved-types'>instance_requirements resolved to "
            f"<span class='id'>{escape(', '.join(resolved))}</span></p>"
        )
    parts.append("<h2>Checkpoints</h2>")
    parts.append(
        _table(
            ["checkpoint", "session", "committed", "size", "where"],
            [
                (
                    "",
                    [
                        escape(str(c["name"])),
                        str(c["session"]),
                        _t(c["committed_at"]),
                        escape(_bytes(c["bytes"]) + (f" in {c['files']} files" if c.get("files") else "")),
                        f"<code>{escape(c['uri'])}</code>",
                    ],
                )
                for c in view["checkpoints"]
            ],
            "checkpoints",
        )
    )
    for s in view["sessions"]:
        if s["status"] == "failed" and s["tail"]:
            parts.append(f"<h2>Session {s['session']}: last output</h2><pre>{escape(chr(10).join(s['tail']))}</pre>")
    return page(title, "\n".join(parts), live=live)


def _transfer_cell(s: Mapping[str, Any]) -> str:
    """A session's data transfer between regions under its cost, when it paid any."""
    if not s.get("transfer_cost_usd"):
        return ""
    at_least = "at least " if s.get("transfer_at_least") else ""
    return (
        f"<br><span class='muted' data-testid='transfer'>incl. {at_least}{s['transfer_cost_usd']:.6f} USD transfer "
        f"({escape(_bytes(s.get('transfer_bytes')))})</span>"
    )


def message_page(title: str, text: str) -> str:
    return page(title, f"<h1>{escape(title)}</h1><p data-testid='message'>{escape(text)}</p>", live=False)


def _pictures(pictures: Mapping[str, Any]) -> list[str]:
    """The dashboard's charts (``ui/dashboard.py``'s ``pictures``), each with the question it answers."""
    now = float(pictures["now"])
    night, days, pools, budgets = (
        pictures["last_night"],
        pictures["cost_per_day"],
        pictures["per_pool"],
        pictures["budgets"],
    )
    parts = ["<h2>Last night: runs against their deadlines</h2>"]
    parts.append(
        f"<div data-testid='chart-deadlines'>{charts.runs_against_deadlines_svg(night, now=now)}</div>"
        if night
        else "<p class='muted' data-testid='chart-deadlines'>no run in the last 24 hours</p>"
    )
    spot = sum(d["spot_usd"] for d in days)
    on_demand = sum(d["on_demand_usd"] for d in days)
    parts.append(
        f"<h2>Cost and savings per day</h2><p class='muted'>{spot:.2f} USD on spot against {on_demand:.2f} USD "
        f"for the same hours on demand: {on_demand - spot:.2f} USD saved</p>"
    )
    parts.append(f"<div data-testid='chart-cost'>{charts.cost_per_day_svg(days)}</div>")
    parts.append("<h2>Interruptions and capacity waits per pool</h2>")
    parts.append(
        f"<div data-testid='chart-pools'>{charts.per_pool_svg(pools)}</div>"
        if pools
        else "<p class='muted' data-testid='chart-pools'>no session launched in the period</p>"
    )
    parts.append("<h2>Budgets of the runs still going</h2>")
    parts.append(
        f"<div data-testid='chart-budgets'>{charts.budgets_svg(budgets)}</div>"
        if budgets
        else "<p class='muted' data-testid='chart-budgets'>no run going with a budget</p>"
    )
    return parts


def fleet_page(
    board: Mapping[str, Any], *, days: float, run_link: Any, pictures: Mapping[str, Any] | None = None
) -> str:
    """``run_link(row) -> str``: the address of a run's view; ``pictures``: the charts' data, drawn above
    the tables."""
    t = board["totals"]
    parts = [
        "<h1>Spot training runs</h1>",
        f"<form class='muted'>period: last <input name='days' value='{days:g}' size='3'> days <button>show</button>"
        "</form>",
        f"<p data-testid='fleet-totals'>{t['running']} running, {t['waiting']} waiting, {t['finished']} finished; "
        f"{t['interruptions']} interruptions; capacity waited {t['capacity_waited_seconds']:.0f} s; "
        f"spot cost {t['spot_usd']:.4f} USD against {t['on_demand_usd']:.4f} USD on demand "
        f"(saved {t['saved_usd']:.4f} USD)</p>",
    ]
    if pictures is not None:
        parts += _pictures(pictures)
    if board["close_to_budget"]:
        parts.append(
            "<h2>Close to a budget</h2><ul data-testid='near-budget'>"
            + "".join(
                f"<li><a target='_top' href='{escape(run_link(r))}'>{escape(r['dag_id'])}.{escape(r['task_id'])}</a>: "
                f"{escape(', '.join(r['near_budget']))}</li>"
                for r in board["close_to_budget"]
            )
            + "</ul>"
        )
    parts.append("<h2>Runs</h2>")
    parts.append(
        _table(
            ["DAG", "task", "run", "Airflow state", "now", "sessions", "interruptions", "capacity wait", "cost"],
            [
                (
                    {"running": "running", "waiting": "interruption"}.get(r["group"], ""),
                    [
                        escape(r["dag_id"]),
                        f"<a target='_top' href='{escape(run_link(r))}'>{escape(r['task_id'])}"
                        + (f"[{r['map_index']}]" if (r.get("map_index") or -1) >= 0 else "")
                        + "</a>",
                        escape(r["run_id"]),
                        escape(str(r["ti_state"])),
                        escape(r["state"]),
                        str(r["sessions"]),
                        str(r["interruptions"]),
                        f"{r['capacity_waited_seconds']:.0f} s",
                        escape(_usd(r["cost"]["spot_usd"])),
                    ],
                )
                for r in board["runs"]
            ],
            "runs",
        )
    )
    parts.append("<h2>Interruptions by instance type and zone</h2>")
    parts.append(
        _table(
            ["instance type", "zone", "interruptions"],
            [
                ("", [escape(p["instance_type"]), escape(p["zone"]), str(p["interruptions"])])
                for p in board["interruptions_by_pair"]
            ],
            "by-pair",
        )
    )
    if board.get("pools"):
        parts.append("<h2>Pools (the fleet record)</h2>")
        parts.append(
            _table(
                [
                    "region",
                    "zone",
                    "instance type",
                    "market",
                    "capacity",
                    "answers",
                    "sessions",
                    "mean life",
                    "interruptions",
                    "mean price",
                    "worth (h)",
                ],
                [("", _pool_cells(p)) for p in board["pools"]],
                "pools",
            )
        )
    live = any(r["group"] != "finished" for r in board["runs"])
    return page("Spot training runs", "\n".join(parts), live=live)


def _pool_cells(p: Mapping[str, Any]) -> list[str]:
    share = "-" if p["availability"] is None else f"{100 * p['availability']:.0f}%"
    life = "-" if p["mean_up_hours"] is None else f"{p['mean_up_hours']:.1f} h"
    price = "-" if p["mean_price"] is None else f"{p['mean_price']:.4f} USD/h"
    return [
        f"<span class='id'>{escape(p['region'])}</span>",
        f"<span class='id'>{escape(p['zone'])}</span>",
        escape(p["instance_type"]),
        escape(p["market"]),
        share,
        str(p["capacity_answers"]),
        str(p["sessions"]),
        life,
        str(p["interruptions"]),
        price,
        f"{p['expected_hours']:.2f}",
    ]
