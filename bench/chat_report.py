"""The chat tables of bench/run.py: ours on each backend beside the Node reference.

One table per room shape and run (paced, saturation, overload); a row per
metric, a column per server, then `<ours>/node` ratios (above 1 is better for
rates, below 1 is better for latency and CPU per message).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
Value = Callable[[Row], Any]


def _step(row: Row, which: str) -> Row | None:
    """The step of a run a table shows: the only or last one (paced, overload), or, for a
    saturation run, the highest that kept up (`sustained`) or the one that delivered most."""
    steps = row.get("steps") or []
    if not steps:
        return None
    if which == "sustained":
        kept = [s for s in steps if s.get("kept_up")]
        return dict(kept[-1]) if kept else None
    if which == "peak":
        return dict(max(steps, key=lambda s: s.get("deliveries_per_s") or 0))
    if which == "failed":
        return next((s for s in steps if not s.get("kept_up")), None)
    return dict(steps[-1])


def _from_step(which: str, show: Callable[[Row], Any]) -> Value:
    """`show(step)` of the step `which` picks (see _step); None where there is none."""

    def value(row: Row) -> Any:
        step = _step(row, which)
        return None if step is None else show(step)

    return value


def _of(which: str, key: str) -> Value:
    return _from_step(which, lambda step: step.get(key))


def _refusals(step: Row) -> Any:
    codes = step.get("refused_by_code") or {}
    if not codes:
        return 0
    return f"{step['refused']:,} (" + ", ".join(f"{c}: {n:,}" for c, n in codes.items()) + ")"


def _refused(which: str) -> Value:
    return _from_step(which, _refusals)


def _deliveries(step: Row) -> str:
    text = f"{step['delivered']:,}/{step['expected']:,}"
    if step.get("drain_s") is not None:
        text += f" (last {step['drain_s']:.2f} s after the last send)"
    return text


def _delivered(which: str) -> Value:
    return _from_step(which, _deliveries)


def _why(row: Row) -> Any:
    step = _step(row, "failed")
    if step is None:
        return "none fell behind"
    reasons = []
    if not step.get("complete"):
        reasons.append(f"{step['delivered']:,}/{step['expected']:,} delivered")
    if step.get("refused"):
        reasons.append(f"{step['refused']:,} refused")
    if step.get("drain_s") is not None:
        reasons.append(f"last delivery {step['drain_s']:.1f} s after the last send")
    if isinstance(step.get("p99_ms"), int | float):
        reasons.append(f"p99 {step['p99_ms']:,.0f} ms")
    return f"{step['offered_msg_s']:,.0f} msg/s: " + ", ".join(reasons)


# (name, value, ratio?)
Metric = tuple[str, Value, bool]

PACED: list[Metric] = [
    ("server CPU % before the first step", lambda r: r.get("settle_server_cpu_pct"), False),
    ("offered msg/s", _of("last", "offered_msg_s"), False),
    ("sent msg/s", _of("last", "sent_msg_s"), False),
    ("sends acknowledged", _of("last", "acknowledged"), False),
    ("sends refused", _refused("last"), False),
    ("delivered / expected", _delivered("last"), False),
    ("deliveries/s", _of("last", "deliveries_per_s"), True),
    ("latency p50 ms", _of("last", "p50_ms"), True),
    ("latency p99 ms", _of("last", "p99_ms"), True),
    ("latency max ms", _of("last", "max_ms"), True),
    ("send answered p99 ms", _of("last", "answer_p99_ms"), True),
    ("server CPU %", _of("last", "server_cpu_pct"), True),
    ("server CPU µs/delivered message", _of("last", "server_cpu_us_per_msg"), True),
    ("Redis/NATS CPU %", _of("last", "service_cpu_pct"), False),
    ("/health p99 ms", _of("last", "health_p99_ms"), True),
    ("loadgen CPU % (all procs)", _of("last", "loadgen_cpu_pct"), False),
    ("loadgen CPU % (busiest proc)", _of("last", "loadgen_max_proc_cpu_pct"), False),
    ("loadgen send lag p99 ms", _of("last", "send_lag_p99_ms"), False),
]

SATURATION: list[Metric] = [
    ("server CPU % before the first step", lambda r: r.get("settle_server_cpu_pct"), False),
    ("sustained msg/s (highest step kept up)", lambda r: r.get("sustained_msg_s"), True),
    ("first step behind", _why, False),
    ("peak deliveries/s (any step)", lambda r: r.get("max_deliveries_per_s"), True),
    ("peak step: offered msg/s", _of("peak", "offered_msg_s"), False),
    ("peak step: latency p99 ms", _of("peak", "p99_ms"), True),
    ("peak step: server CPU %", _of("peak", "server_cpu_pct"), True),
    ("peak step: loadgen CPU % (busiest proc)", _of("peak", "loadgen_max_proc_cpu_pct"), False),
    ("peak step: loadgen send lag p99 ms", _of("peak", "send_lag_p99_ms"), False),
    ("sustained step: latency p50 ms", _of("sustained", "p50_ms"), True),
    ("sustained step: latency p99 ms", _of("sustained", "p99_ms"), True),
    (
        "sustained step: server CPU µs/delivered message",
        _of("sustained", "server_cpu_us_per_msg"),
        True,
    ),
    ("sustained step: server CPU %", _of("sustained", "server_cpu_pct"), True),
]

OVERLOAD: list[Metric] = [
    ("offered msg/s", _of("last", "offered_msg_s"), False),
    ("sends acknowledged", _of("last", "acknowledged"), False),
    ("sends refused", _refused("last"), False),
    ("sends unanswered", _of("last", "unanswered"), False),
    ("delivered / expected", _delivered("last"), False),
    ("answer-to-receipt p50 ms", _of("last", "answer_to_receipt_p50_ms"), True),
    ("answer-to-receipt p99 ms", _of("last", "answer_to_receipt_p99_ms"), True),
    ("send-to-receipt p50 ms", _of("last", "p50_ms"), True),
    ("send-to-receipt p99 ms", _of("last", "p99_ms"), True),
    ("send answered p99 ms", _of("last", "answer_p99_ms"), True),
    ("/health p50 ms", _of("last", "health_p50_ms"), True),
    ("/health p99 ms", _of("last", "health_p99_ms"), True),
    ("/health max ms", _of("last", "health_max_ms"), True),
    ("/health failed probes", _of("last", "health_failures"), False),
    ("server CPU %", _of("last", "server_cpu_pct"), True),
    ("loadgen CPU % (busiest proc)", _of("last", "loadgen_max_proc_cpu_pct"), False),
]

RUNS = {"paced": PACED, "saturation": SATURATION, "overload": OVERLOAD}


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if isinstance(value, float) and value != int(value) else f"{value:g}"
    return str(value)


def _cell(row: Row | None, value: Value) -> str:
    if row is None:
        return "—"
    if "skipped" in row:
        return "n/a"
    if "error" in row:
        return "error"
    return _num(value(row))


def _ratio(ours: Row | None, node: Row | None, value: Value) -> str:
    if not ours or not node or "steps" not in ours or "steps" not in node:
        return "—"
    x, y = value(ours), value(node)
    if not isinstance(x, int | float) or not isinstance(y, int | float) or not y:
        return "—"
    if (isinstance(x, float) and math.isnan(x)) or (isinstance(y, float) and math.isnan(y)):
        return "—"
    return f"{x / y:.2f}x"


def tables(results: dict[str, Row], args: argparse.Namespace) -> str:
    targets = _targets(results)
    ours = [t for t in targets if t != "node"]
    out = []
    for shape in args.chat_shapes:
        rooms, members = shape.split("x")
        for run in args.chat_runs:
            rows = {t: results.get(f"{shape}/{run}/{t}") for t in targets}
            if not any(rows.values()):
                continue
            pinned = any(r and r.get("pinned") for r in rows.values())
            out.append(
                f"\n### Chat, {rooms} rooms x {members} members, {run}"
                + (" (server on CPU 0, load generator on CPU 1)" if pinned else "")
                + "\n"
            )
            head = ["metric", *targets]
            if "node" in targets:
                head += [f"{t}/node" for t in ours]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for name, value, ratio in RUNS[run]:
                cells = [_cell(rows[t], value) for t in targets]
                if "node" in targets:
                    cells += [_ratio(rows[t], rows["node"], value) if ratio else "" for t in ours]
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            notes = [
                f"{t}: {row.get('skipped') or row.get('error')}"
                for t, row in rows.items()
                if row and (row.get("skipped") or row.get("error"))
            ]
            notes += [
                f"{t}: {row['not_ready']} of {row['connections']} members never saw a readiness"
                f" probe (their subscription delivered nothing within the setup timeout);"
                f" measured all the same: {row.get('setup_errors') or 'no error seen'}"
                for t, row in rows.items()
                if row and row.get("not_ready")
            ]
            if pinned:
                notes += [
                    f"{t}: not pinned (several server processes need both CPUs)"
                    for t, row in rows.items()
                    if row and "steps" in row and not row.get("pinned")
                ]
            for t, row in rows.items():
                for step in (row or {}).get("steps") or []:
                    for text in (step.get("refusal_examples") or [])[:1]:
                        notes.append(f"{t}, {step['offered_msg_s']:,.0f} msg/s refused: {text}")
                    for text in (step.get("errors") or [])[:1]:
                        notes.append(f"{t}, {step['offered_msg_s']:,.0f} msg/s: {text}")
            if notes:
                out.append("\n" + "\n".join(f"- {n[:400]}" for n in notes))
    return "\n".join(out)


def _targets(results: dict[str, Row]) -> list[str]:
    seen: list[str] = []
    for key in results:
        target = key.rsplit("/", 1)[1]
        if target not in seen:
            seen.append(target)
    return seen


def brief(row: Row) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"ERROR {row['error']}"
    parts = [f"{row.get('connections')} connections, setup {row.get('setup_s')} s"]
    for step in row.get("steps") or []:
        parts.append(
            f"{step['offered_msg_s']:g} msg/s: {step['delivered']}/{step['expected']} delivered,"
            f" {step['refused']} refused, {step['deliveries_per_s']}/s,"
            f" p50 {step['p50_ms']} p99 {step['p99_ms']} ms"
            + ("" if step.get("kept_up") else " (behind)")
        )
    if "sustained_msg_s" in row and len(row.get("steps") or []) > 1:
        parts.append(f"sustained {row['sustained_msg_s']} msg/s")
    return "; ".join(parts)
