"""Deadline-aware policy against on-demand, greedy and Uniform Progress on spot traces, in the same run.

    python benchmarks/deadline_bench.py [--starts 200 | --stride K] [--seed 1] [--traces DIR] [--work 48 --work 6]
        [--fraction 0.6 ...] [--set NAME ...] [--json FILE]

Pool sets: each public trace under ``--traces`` (default /work/shared/data/spot-traces when it exists,
"Can't Be Late", NSDI '24) alone, both zones of each instance type together, and the generated sets of
``airflow_grid_resume/policy/tracegen.py``. For each work (48 h, the paper's; 6 h, a night) and job fraction
(work / deadline), the same seeded random starts replay through every policy (changeover 0.2 h, spot 1, on-demand
3). Per row: the share of deadlines our policy met, its mean cost against on-demand, Uniform Progress and greedy,
and the baselines' own shares and costs. The rows above the better of Uniform Progress and greedy are listed with
two standard errors of the paired per-start difference (how much of the excess the draw of starts explains);
``--stride K`` replays every K-th start instead of a random draw (no draw: what is above is above). Exits 1 if our
policy misses a deadline, costs more than on-demand on average, or more than the better of Uniform Progress and
greedy on any row.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_grid_resume.policy.simulate import simulate  # noqa: E402
from airflow_grid_resume.policy.tracegen import POOL_SETS, generate_set  # noqa: E402
from airflow_grid_resume.policy.traces import Trace, load_trace  # noqa: E402

POLICIES = ("default", "uniform-progress", "greedy", "on-demand")
SHARED_TRACES = Path("/work/shared/data/spot-traces")
GENERATED_TICKS = 3895  # as long as the public traces: 27 days of 10-minute ticks
# Our mean may exceed the better baseline's by float noise only.
SLACK = 1e-9


def pool_sets(trace_dir: Path | None, seed: int) -> dict[str, list[Trace]]:
    sets: dict[str, list[Trace]] = {}
    if trace_dir is not None and trace_dir.is_dir():
        traces = {t.name: t for t in (load_trace(p) for p in sorted(trace_dir.glob("*.json")))}
        for name, trace in traces.items():
            sets[name] = [trace]
        kinds = sorted({name.split("_", 1)[1] for name in traces if "_" in name})
        for kind in kinds:
            zones = [t for name, t in traces.items() if name.endswith("_" + kind)]
            if len(zones) > 1:
                sets["+".join(t.name.split("_", 1)[0] for t in zones) + "_" + kind] = zones
    for name, shapes in POOL_SETS.items():
        sets[name] = generate_set(shapes, GENERATED_TICKS, seed)
    return sets


def run_row(traces: list[Trace], work: float, fraction: float, starts: list[int], args: argparse.Namespace) -> dict:
    deadline = work / fraction
    prices = {t.name: args.spot_price for t in traces}
    row: dict = {"work": work, "fraction": fraction, "deadline": round(deadline, 3), "starts": len(starts)}
    per_start: dict[str, list[float]] = {}
    for policy in POLICIES:
        costs, met, unfinished = [], 0, 0
        for start in starts:
            result = simulate(
                traces, work, deadline, args.changeover, prices, args.spot_price * args.on_demand_ratio, start, policy
            )
            if result.cost is None:
                unfinished += 1
                costs.append(math.nan)
                continue
            costs.append(result.cost)
            met += result.deadline_met
        finished = [c for c in costs if not math.isnan(c)]
        per_start[policy] = costs
        row[policy] = {
            "met": met / len(starts),
            "mean_cost": sum(finished) / len(finished) if finished else math.nan,
            "unfinished": unfinished,
        }
    ours = row["default"]["mean_cost"]
    row["vs_on_demand"] = ours / row["on-demand"]["mean_cost"]
    row["vs_uniform_progress"] = ours / row["uniform-progress"]["mean_cost"]
    row["vs_greedy"] = ours / row["greedy"]["mean_cost"]
    better = min(("uniform-progress", "greedy"), key=lambda p: row[p]["mean_cost"])
    excess, noise = paired_excess(per_start["default"], per_start[better])
    row["vs_better"] = {"baseline": better, "excess": excess, "two_se": 2 * noise}
    row["ok"] = (
        row["default"]["met"] == 1.0
        and ours <= row["on-demand"]["mean_cost"] * (1 + SLACK)
        and ours <= row[better]["mean_cost"] * (1 + SLACK)
    )
    return row


def paired_excess(ours: list[float], baseline: list[float]) -> tuple[float, float]:
    """Our mean cost over the baseline's, minus 1, and the standard error of that figure: the same starts replay
    through both, so the per-start differences tell how much of an excess the choice of starts alone explains."""
    pairs = [(a, b) for a, b in zip(ours, baseline, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 2:
        return math.nan, math.nan
    mean_base = sum(b for _, b in pairs) / len(pairs)
    diffs = [a - b for a, b in pairs]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return mean / mean_base, sd / math.sqrt(len(diffs)) / mean_base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=200, help="random starts per pool set, work and fraction")
    parser.add_argument("--stride", type=int, help="every K-th start from the first to the last, not a draw")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--traces", type=Path, default=SHARED_TRACES if SHARED_TRACES.is_dir() else None)
    parser.add_argument("--work", type=float, action="append", help="hours of work (default: 48 and 6)")
    parser.add_argument("--fraction", type=float, action="append", help="work / deadline (default 0.6 to 0.95)")
    parser.add_argument("--set", action="append", dest="sets", help="only these pool sets")
    parser.add_argument("--changeover", type=float, default=0.2)
    parser.add_argument("--spot-price", type=float, default=1.0)
    parser.add_argument("--on-demand-ratio", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    works = args.work or [48.0, 6.0]
    fractions = args.fraction or [0.6, 0.7, 0.8, 0.9, 0.95]
    sets = pool_sets(args.traces, args.seed)
    if args.sets:
        sets = {name: sets[name] for name in args.sets}
    began = time.monotonic()
    rows = []
    print(
        "| pool set | work h | fraction | met | ours/on-demand | ours/UP | ours/greedy"
        " | UP/on-demand | UP met | greedy met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, traces in sets.items():
        length = min(len(t.data) for t in traces)
        gap_hours = traces[0].tick_hours
        rng = random.Random(f"{args.seed}:{name}")
        for work in works:
            for fraction in fractions:
                # Starts after a day of history, leaving room for the deadline before the traces end.
                last = length - math.ceil(work / fraction / gap_hours) - 2
                first = min(round(24 / gap_hours), last)
                if args.stride:
                    starts = list(range(first, last + 1, args.stride))
                else:
                    starts = [rng.randint(first, last) for _ in range(args.starts)]
                row = run_row(traces, work, fraction, starts, args)
                row["set"] = name
                rows.append(row)
                mark = "" if row["ok"] else " **MISS**"
                print(
                    f"| {name} | {work:g} | {fraction:g} | {row['default']['met']:.0%} | {row['vs_on_demand']:.3f} "
                    f"| {row['vs_uniform_progress']:.3f} | {row['vs_greedy']:.3f} "
                    f"| {row['uniform-progress']['mean_cost'] / row['on-demand']['mean_cost']:.3f} "
                    f"| {row['uniform-progress']['met']:.0%} | {row['greedy']['met']:.0%} |{mark}",
                    flush=True,
                )
    ok = all(row["ok"] for row in rows)
    above = [r for r in rows if not r["ok"] and r["default"]["met"] == 1.0 and r["vs_on_demand"] <= 1 + SLACK]
    beyond = [r for r in above if r["vs_better"]["excess"] > r["vs_better"]["two_se"]]
    for r in sorted(above, key=lambda r: -r["vs_better"]["excess"]):
        vs = r["vs_better"]
        print(
            f"above {vs['baseline']}: {r['set']} {r['work']:g} h {r['fraction']:g}: {vs['excess']:+.3%} "
            f"(two standard errors over the starts: {vs['two_se']:.3%})"
        )
    for work in works:
        mine = [r for r in rows if r["work"] == work]
        print(
            f"work {work:g} h: {len(mine)} rows, "
            f"mean ours/on-demand {sum(r['vs_on_demand'] for r in mine) / len(mine):.3f}, "
            f"ours/UP {sum(r['vs_uniform_progress'] for r in mine) / len(mine):.3f}, "
            f"ours/greedy {sum(r['vs_greedy'] for r in mine) / len(mine):.3f}"
        )
    print(
        f"{len(rows)} rows in {time.monotonic() - began:.0f} s; at or below the better of UP and greedy: "
        f"{len(rows) - len(above)}, above: {len(above)}, of which by more than two standard errors: {len(beyond)}; "
        f"every target met: {ok}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
