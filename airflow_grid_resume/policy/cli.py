"""``grid-resume simulate``: replay spot traces through a deadline policy and say what each start would cost.

The contract (issue 25) is exact so that anyone can check the numbers: see simulate.py for the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from airflow_grid_resume.policy.deadline import POLICIES
from airflow_grid_resume.policy.simulate import SimResult, simulate
from airflow_grid_resume.policy.traces import Trace, TraceError, check_aligned, load_trace

DESCRIPTION = "replay spot availability traces through a deadline policy; one result per --start"


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: hours cannot be negative")
    return value


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a price") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a price cannot be negative")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grid-resume simulate", description=DESCRIPTION)
    parser.add_argument("--trace", action="append", required=True, metavar="FILE", help="one JSON trace per pool")
    parser.add_argument("--work", type=_hours, required=True, metavar="H", help="hours of training")
    parser.add_argument("--deadline", type=_hours, required=True, metavar="H", help="hours from the start")
    parser.add_argument("--changeover", type=_hours, required=True, metavar="H", help="hours each start costs")
    parser.add_argument(
        "--spot-price",
        action="append",
        required=True,
        metavar="P",
        help="one price for every pool, or POOL=PRICE (repeat, or separate pairs with commas)",
    )
    parser.add_argument("--on-demand-price", type=_price, required=True, metavar="P")
    parser.add_argument("--start", type=int, action="append", required=True, metavar="T", help="first tick (index)")
    parser.add_argument("--policy", default="default", choices=list(POLICIES), help="default: ours")
    parser.add_argument("--json", action="store_true", help="one JSON line per start")
    return parser


def spot_prices(values: Sequence[str], traces: Sequence[Trace]) -> dict[str, float]:
    """Every pool's price from ``--spot-price`` values: a plain price for all, ``POOL=PRICE`` for one."""
    names = [t.name for t in traces]
    default: float | None = None
    prices: dict[str, float] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            pool, sep, price = item.rpartition("=")
            try:
                amount = _price(price)
            except argparse.ArgumentTypeError as error:
                raise TraceError(f"--spot-price {item}: {error}") from None
            if not sep:
                default = amount
            elif pool not in names:
                raise TraceError(f"--spot-price {item}: no trace is named {pool!r} (pools: {', '.join(names)})")
            else:
                prices[pool] = amount
    missing = [n for n in names if n not in prices]
    if missing and default is None:
        raise TraceError(f"--spot-price: no price for {', '.join(missing)}; give POOL=PRICE or one plain price")
    return {n: prices.get(n, default if default is not None else 0.0) for n in names}


def _number(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def as_json(result: SimResult) -> str:
    """The contract's line, keys in its order."""
    return json.dumps(
        {
            "start": result.start,
            "policy": result.policy,
            "cost": _number(result.cost),
            "finish_hours": _number(result.finish_hours),
            "deadline_met": result.deadline_met,
            "spot_hours": _number(result.spot_hours),
            "on_demand_hours": _number(result.on_demand_hours),
            "changeovers": result.changeovers,
        }
    )


def _table(results: Sequence[SimResult], on_demand_cost: float) -> str:
    header = ("start", "policy", "cost", "vs on-demand", "finish h", "deadline", "spot h", "on-demand h", "changeovers")
    rows = [header]
    for r in results:
        rows.append(
            (
                str(r.start),
                r.policy,
                "-" if r.cost is None else f"{r.cost:.2f}",
                "-" if r.cost is None else f"{r.cost / on_demand_cost:.2f}",
                "not finished" if r.finish_hours is None else f"{r.finish_hours:.2f}",
                "met" if r.deadline_met else "MISSED",
                f"{r.spot_hours:.2f}",
                f"{r.on_demand_hours:.2f}",
                str(r.changeovers),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        traces = [load_trace(path) for path in args.trace]
        check_aligned(traces)
        if args.work <= 0:
            raise TraceError("--work must be more than 0 hours")
        if args.deadline < args.work:
            raise TraceError(
                f"--deadline {args.deadline:g} h is shorter than --work {args.work:g} h: no run can make it"
            )
        prices = spot_prices(args.spot_price, traces)
        length = min(len(t.data) for t in traces)
        bad = [s for s in args.start if not 0 <= s < length]
        if bad:
            raise TraceError(f"--start {bad[0]} is outside the traces (ticks 0 to {length - 1})")
        results = [
            simulate(
                traces, args.work, args.deadline, args.changeover, prices, args.on_demand_price, start, args.policy
            )
            for start in args.start
        ]
    except TraceError as error:
        print(f"grid-resume simulate: {error}", file=sys.stderr)
        return 2
    if args.json:
        for result in results:
            print(as_json(result))
    else:
        print(_table(results, (args.work + args.changeover) * args.on_demand_price or 1.0))
    return 0
