"""The figures of docs/SCALE.md, drawn from the JSON the report and the scaling run print.

matplotlib is an optional dependency (``pip install 'fstore[sim]'``); it is
imported only here, so the simulator itself runs without it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fstore.net.gossip import DEFAULT_CONFIG

COLOURS = ("tab:blue", "tab:orange", "tab:green")
BUDGET = 5 * 1024  # bytes per member per second: the goal
FIGURE_SIZE = (7.5, 4.2)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("plots need matplotlib: pip install 'fstore[sim]'") from exc
    return plt


def spread(reports: list[dict[str, Any]], out: Path) -> Path:
    """Fraction of members that know: a join and a failure by gossip round, a failure by second."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2), sharey=True)
    panels = (
        (axes[0], "join", "a join, from the join request", False),
        (axes[1], "failure", "a failure, from its first declaration", False),
        (axes[2], "failure", "a failure, from the crash", True),
    )
    for axis, key, title, from_crash in panels:
        for report, colour in zip(reports, COLOURS, strict=False):
            round_length = report["config"]["gossip_interval"]
            for i, trial in enumerate(report.get(key, [])):
                if from_crash:
                    xs = [0.0] + [trial["first_dead"] + t for t, _ in trial["curve"]]
                else:
                    xs = [0.0] + [t / round_length for t, _ in trial["curve"]]
                ys = [0.0] + [f for _, f in trial["curve"]]
                label = f"{report['members']:,} members" if i == 0 else None
                axis.step(xs, ys, where="post", color=colour, alpha=0.7, label=label)
        axis.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
        if from_crash:
            axis.set_xlabel("simulated seconds")
        else:
            axis.axvline(15, color="red", linewidth=0.8, linestyle="--", label="goal: 15 rounds")
            axis.set_xlabel(f"gossip rounds ({DEFAULT_CONFIG.gossip_interval} s each)")
            axis.set_xlim(0, 16)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of members that know")
    axes[0].legend(fontsize=8, loc="lower right")
    return _save(fig, out / "gossip-spread.png")


def bandwidth(points: list[dict[str, Any]], out: Path) -> Path:
    """Bytes each member sends per second as the cluster grows, measured and extrapolated."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=FIGURE_SIZE)
    sizes = [p["members"] for p in points]
    steady = [p["steady"]["bytes_per_member_s"] for p in points]
    axis.plot(sizes, steady, "o-", color="tab:blue", label="measured: steady, 1% loss")
    churned = [(p["members"], p["churn"]["bytes_per_member_s"]) for p in points if p["churn"]]
    if churned:
        axis.plot(
            *zip(*churned, strict=True),
            "s-",
            color="tab:orange",
            label="measured: 5% of members crash and 5% join per minute",
        )
    far = [10**k for k in range(2, 7)]
    fit = _fit(points, "steady")
    if fit:
        axis.plot(
            far, [_model(n, *fit) for n in far], ":", color="tab:blue", label="extrapolated: steady"
        )
    axis.axhline(BUDGET, color="red", linestyle="--", linewidth=0.8, label="goal: 5 KB/s")
    cap = DEFAULT_CONFIG.gossip_fanout * DEFAULT_CONFIG.max_piggyback_bytes
    cap_per_second = cap / DEFAULT_CONFIG.gossip_interval
    axis.axhline(
        cap_per_second,
        color="grey",
        linestyle="-.",
        linewidth=0.8,
        label="gossip cap: fanout x 1 KiB per round",
    )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("members")
    axis.set_ylabel("bytes sent per member per second")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    return _save(fig, out / "gossip-bandwidth.png")


def _model(members: float, fixed: float, per_member: float) -> float:
    """Fixed costs (probes, digests) plus dissemination: N times the retransmit limit."""
    return fixed + per_member * members * DEFAULT_CONFIG.retransmit_limit(int(members))


def _fit(points: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """Least squares of ``_model`` over the measured points."""
    xs = [p["members"] * DEFAULT_CONFIG.retransmit_limit(p["members"]) for p in points if p[key]]
    ys = [p[key]["bytes_per_member_s"] for p in points if p[key]]
    if len(xs) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return mean_y - slope * mean_x, max(slope, 0.0)


def crossing(points: list[dict[str, Any]], key: str = "steady") -> float:
    """Where the extrapolated ``key`` bandwidth reaches the 5 KB/s goal (members)."""
    fit = _fit(points, key)
    if fit is None or fit[1] <= 0:
        return math.inf
    low, high = 10.0, 1e9
    while high / low > 1.01:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if _model(mid, *fit) < BUDGET else (low, mid)
    return low


def churn_placement(reports: list[dict[str, Any]], out: Path) -> Path:
    """Placement agreement over time while members crash and join."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=FIGURE_SIZE)
    for report, colour in zip(reports, COLOURS, strict=False):
        churn = report.get("churn")
        if not churn:
            continue
        times = [t for t, _, _ in churn["samples"]]
        label = f"{report['members']:,} members"
        axis.plot(
            times,
            [100 * p for _, p, _ in churn["samples"]],
            "o-",
            color=colour,
            label=f"{label}: agrees with the truth",
        )
        axis.plot(
            times,
            [100 * p for _, _, p in churn["samples"]],
            "s--",
            color=colour,
            label=f"{label}: agrees with the majority",
        )
    axis.set_xlabel("simulated seconds (crashes and joins start at 0)")
    axis.set_ylabel("% of (member, address) pairs")
    axis.set_title("placement of random addresses, R = 3, under 5% churn per minute", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(fig, out / "gossip-churn-placement.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
