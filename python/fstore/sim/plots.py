"""The figures of docs/SCALE.md, drawn from the JSON the report and the scaling run print.

matplotlib is an optional dependency (``pip install 'fstore[sim]'``); it is
imported only here, so the simulator itself runs without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fstore.net.gossip import DEFAULT_CONFIG
from fstore.sim import model

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


def bandwidth(points: list[dict[str, Any]], reports: list[dict[str, Any]], out: Path) -> Path:
    """Bytes each member sends per second as the cluster grows: measured, and the model."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 4.8))
    steady = sorted(
        [(p["members"], p["steady"]["bytes_per_member_s"]) for p in points]
        + [
            (r["members"], s["traffic"]["bytes_per_member_s"])
            for r in reports
            for s in r.get("steady", [])
            if s["loss"] == 0.01
        ]
    )
    churned = sorted(
        [(p["members"], p["churn"]["bytes_per_member_s"]) for p in points if p["churn"]]
        + [
            (r["members"], r["churn"]["traffic"]["bytes_per_member_s"])
            for r in reports
            if "churn" in r
        ]
    )
    axis.plot(*zip(*steady, strict=True), "o", color="tab:blue", label="measured: steady, 1% loss")
    if churned:
        label = "measured: 5% of members crash and 5% join per minute"
        axis.plot(*zip(*churned, strict=True), "s", color="tab:orange", label=label)
    costs = model.Costs.from_reports(reports)
    sizes = [10 ** (k / 8) for k in range(16, 49)]
    for cost, style, name in (
        (lambda n: costs.churn(n, 0.05), "--", "model: 5% churn per minute"),
        (costs.restarts, "-.", "model: every member restarts once a day"),
        (lambda n: costs.lossy(n, 0.05), ":", "model: steady, 5% loss"),
    ):
        axis.plot(sizes, [cost(n) for n in sizes], style, color="grey", label=name)
    axis.axhline(BUDGET, color="red", linewidth=0.8, label="goal: 5 KB/s")
    cap = DEFAULT_CONFIG.gossip_fanout * DEFAULT_CONFIG.max_piggyback_bytes
    per_second = cap / DEFAULT_CONFIG.gossip_interval
    axis.axhline(per_second, color="black", linewidth=0.6, label="gossip cap: 3 x 1 KiB a round")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_ylim(50, 2e5)
    axis.set_xlabel("members")
    axis.set_ylabel("bytes sent per member per second")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, loc="upper left")
    return _save(fig, out / "gossip-bandwidth.png")


def limits(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Where each modelled case reaches the 5 KB/s goal (members)."""
    costs = model.Costs.from_reports(reports)
    return {
        "5% churn per minute": model.crossing(lambda n: costs.churn(n, 0.05), BUDGET),
        "one restart per member per day": model.crossing(costs.restarts, BUDGET),
        "steady, 5% loss": model.crossing(lambda n: costs.lossy(n, 0.05), BUDGET),
    }


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
