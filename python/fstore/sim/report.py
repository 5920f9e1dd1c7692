"""The measurements of docs/SCALE.md at one cluster size, as JSON and as a Markdown table."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from fstore.net.gossip import DEFAULT_CONFIG
from fstore.sim import scenarios
from fstore.sim.cluster import ClusterSpec
from fstore.sim.network import Latency

SECTIONS: Final = ("join", "failure", "steady", "churn", "partition")


@dataclass(frozen=True)
class ReportSpec:
    members: int
    seed: int = 1
    trials: int = 5  # joins and failures, one after another in one cluster
    loss: float = 0.01  # during the joins and failures
    steady_seconds: float = 600.0  # each of the false-positive runs
    steady_losses: tuple[float, ...] = (0.01, 0.05)
    churn_per_minute: float = 0.05
    churn_seconds: float = 120.0
    churn_warmup: float = 60.0  # churn before traffic and placement are measured
    partition_minority: float = 0.3
    partition_seconds: float = 180.0
    sections: tuple[str, ...] = SECTIONS
    latency: Latency = field(default_factory=Latency)


def run(spec: ReportSpec, progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every section of ``spec``; each also records the CPU seconds it took."""
    config = DEFAULT_CONFIG

    def cluster(loss: float = spec.loss) -> ClusterSpec:
        return ClusterSpec(spec.members, spec.seed, loss, spec.latency, config)

    report: dict[str, Any] = {
        "members": spec.members,
        "seed": spec.seed,
        "latency_median": spec.latency.median,
        "latency_sigma": spec.latency.sigma,
        "config": asdict(config),
        "retransmit_limit": config.retransmit_limit(spec.members),
        "suspicion_timeouts": config.suspicion_timeouts(spec.members),
    }
    runs: dict[str, Callable[[], Any]] = {
        "join": lambda: scenarios.join_trials(cluster(), spec.trials),
        "failure": lambda: scenarios.failure_trials(cluster(), spec.trials),
        "steady": lambda: [
            scenarios.steady(cluster(loss), spec.steady_seconds) for loss in spec.steady_losses
        ],
        "churn": lambda: scenarios.churn(
            cluster(0.0), spec.churn_per_minute, spec.churn_seconds, spec.churn_warmup
        ),
        "partition": lambda: scenarios.partition(
            cluster(0.0), spec.partition_minority, spec.partition_seconds
        ),
    }
    for name in spec.sections:
        progress(f"{name}: {spec.members} members ...")
        started = time.process_time()
        result = runs[name]()
        cpu = time.process_time() - started
        report[name] = [asdict(r) for r in result] if isinstance(result, list) else asdict(result)
        report.setdefault("cpu_seconds", {})[name] = round(cpu, 1)
        progress(f"{name}: done in {cpu:.0f} s of CPU")
    return report


# --- the table ------------------------------------------------------------------------


def table(reports: list[dict[str, Any]]) -> str:
    """Reports (one per cluster size) side by side, as a Markdown table."""
    columns = [dict(_rows(r)) for r in reports]
    labels = list(dict.fromkeys(label for column in columns for label in column))
    header = "| measure | " + " | ".join(f"{r['members']:,} members" for r in reports) + " |"
    lines = [header, "|" + " --- |" * (len(reports) + 1)]
    for label in labels:
        cells = " | ".join(column.get(label, "—") for column in columns)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def merge(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports of the same cluster size (run section by section) merged, smallest size first."""
    by_size: dict[int, dict[str, Any]] = {}
    for part in parts:
        merged = by_size.setdefault(part["members"], {})
        cpu = {**merged.get("cpu_seconds", {}), **part.get("cpu_seconds", {})}
        merged.update(part)
        merged["cpu_seconds"] = cpu
    return [by_size[size] for size in sorted(by_size)]


def _rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    round_length = report["config"]["gossip_interval"]
    if "join" in report:
        rows += _spread_rows("join", report["join"], round_length)
    if "failure" in report:
        trials = report["failure"]
        rows += [
            ("failure: crash → first suspicion (median)", _s(_median(trials, "first_suspect"))),
            ("failure: crash → first declared dead (median)", _s(_median(trials, "first_dead"))),
        ]
        rows += _spread_rows("failure: first declaration", trials, round_length)
        rows.append(
            ("failure: crash → every member knows (worst)", _s(_max(trials, "detected_all")))
        )
    for steady in report.get("steady", []):
        rows += _steady_rows(steady)
    if "churn" in report:
        rows += _churn_rows(report["churn"])
    if "partition" in report:
        part = report["partition"]
        label = f"partition {part['minority']:.0%} / {1 - part['minority']:.0%}"
        rows += [
            (
                f"{label}, {part['seconds_apart']:.0f} s: larger side sees only itself",
                _within(part["majority_split"], part["seconds_apart"]),
            ),
            (
                f"{label}, {part['seconds_apart']:.0f} s: smaller side sees only itself",
                _within(part["minority_split"], part["seconds_apart"]),
            ),
            (f"{label}: every view whole after healing", _s(part["healed_after"])),
        ]
    return rows


def _spread_rows(
    label: str, trials: list[dict[str, Any]], round_length: float
) -> list[tuple[str, str]]:
    def worst(key: str) -> str:
        seconds = _max(trials, key)
        return f"{seconds / round_length:.1f} rounds ({_s(seconds)}), worst of {len(trials)}"

    return [
        (f"{label} → 99% of members", worst("seconds_99")),
        (f"{label} → every member", worst("seconds_all")),
    ]


def _steady_rows(steady: dict[str, Any]) -> list[tuple[str, str]]:
    label = f"steady, {steady['loss']:.0%} loss"
    deaths, days = steady["false_deaths"], steady["member_days"]
    span = f"{steady['seconds']:.0f} s"
    if deaths:
        rate = (
            f"{steady['false_per_member_day']:.3g} per member-day ({deaths} in {days:.1f}; {span})"
        )
    else:
        bound = steady["false_per_member_day_bound"]
        rate = f"none in {days:.1f} member-days ({span}): < {bound:.2g} per member-day (95%)"
    refuted = steady["suspicions"] - deaths
    return [
        (f"{label}: false positives (live members declared dead)", rate),
        (f"{label}: false positives per hour, whole cluster", f"{steady['false_per_hour']:.2g}"),
        (f"{label}: suspicions of live members, refuted in time", f"{refuted} ({span})"),
        (f"{label}: bytes sent per member per second", _bytes(steady["traffic"])),
        (f"{label}: placement agrees with the truth", _pct(steady["placement_truth"])),
    ]


def _churn_rows(churn: dict[str, Any]) -> list[tuple[str, str]]:
    label = f"churn {churn['per_minute']:.0%}/min"
    return [
        (f"{label}: bytes sent per member per second", _bytes(churn["traffic"])),
        (f"{label}: placement agrees with the truth", _pct(churn["placement_truth"])),
        (f"{label}: placement agrees with the majority", _pct(churn["placement_consistent"])),
        (f"{label}: live members declared dead", str(churn["false_deaths"])),
    ]


def _bytes(traffic: dict[str, Any]) -> str:
    mean, busiest = traffic["bytes_per_member_s"], traffic["max_member_bytes_s"]
    messages = traffic["messages_per_member_s"]
    return f"{mean:,.0f} B/s (busiest member {busiest:,.0f}; {messages:.1f} messages/s)"


def _s(seconds: float) -> str:
    return "not reached" if not math.isfinite(seconds) else f"{seconds:.2f} s"


def _within(seconds: float, limit: float) -> str:
    return _s(seconds) if math.isfinite(seconds) else f"not within {limit:.0f} s"


def _pct(fraction: float) -> str:
    return f"{fraction:.3%}"


def _median(trials: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(t[key] for t in trials))


def _max(trials: list[dict[str, Any]], key: str) -> float:
    return float(max(t[key] for t in trials))
