"""What membership gossip costs a member as the cluster grows, calibrated on simulation runs.

Each member sends a fixed amount (probes, digests), plus, for every change in
the cluster, its record ``L(N)`` times. Changes come at a rate proportional to
N: crashes and joins (churn), and suspicions of live members at a loss rate.
The cost of one change per member and per retransmission is measured by a
report (``report.run``), and the model extrapolates from there:

    bytes/s per member = fixed + changes/s(N) x cost x L(N)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fstore.net.gossip import DEFAULT_CONFIG, GossipConfig

SECONDS_PER_DAY = 86400.0


def suspicion_probability(loss: float, config: GossipConfig = DEFAULT_CONFIG) -> float:
    """P(a live member is suspected by one probe): both direct pings and every helper fail."""
    direct = 1 - (1 - loss) ** 2
    indirect = 1 - (1 - loss) ** 4
    return direct * direct * indirect**config.indirect_checks


@dataclass(frozen=True)
class Costs:
    fixed: float  # bytes/s per member with nothing changing
    per_change: float  # bytes per member, per change, per retransmission (churn: crash or join)
    per_suspicion: float  # bytes per member, per suspicion refuted, per retransmission

    def bandwidth(self, members: float, changes_per_s: float, suspicions_per_s: float) -> float:
        sends = DEFAULT_CONFIG.retransmit_limit(int(members))
        spread = changes_per_s * self.per_change + suspicions_per_s * self.per_suspicion
        return self.fixed + spread * sends

    def churn(self, members: float, per_minute: float) -> float:
        """Each minute, ``per_minute`` of the members crash and as many join."""
        return self.bandwidth(members, 2 * per_minute * members / 60, 0.0)

    def restarts(self, members: float, per_day: float = 1.0) -> float:
        """Each member restarts ``per_day`` times a day (a crash and a join each time)."""
        return self.bandwidth(members, 2 * per_day * members / SECONDS_PER_DAY, 0.0)

    def lossy(self, members: float, loss: float) -> float:
        """Nothing changes, but live members are suspected (and refute) at this loss."""
        return self.bandwidth(members, 0.0, suspicion_probability(loss) * members)

    @classmethod
    def from_reports(cls, reports: list[dict[str, Any]]) -> Costs:
        """Calibrated on reports: the smallest churn run (the one least held back by the
        gossip cap) and the largest steady run at 5% loss."""
        steady = [(r, s) for r in reports for s in r.get("steady", [])]
        quiet = min(steady, key=lambda rs: rs[1]["loss"])[1]
        fixed = quiet["traffic"]["bytes_per_member_s"]
        report, lossy = max(
            ((r, s) for r, s in steady if s["loss"] >= 0.05), key=lambda rs: rs[0]["members"]
        )
        sends = DEFAULT_CONFIG.retransmit_limit(report["members"])
        per_suspicion = lossy["traffic"]["by_kind"].get("Broadcast", 0.0) / (
            max(lossy["suspicions"], 1) / lossy["seconds"]
        )
        churned = min((r for r in reports if "churn" in r), key=lambda r: r["members"])
        churn = churned["churn"]
        changes_per_s = 2 * churn["per_minute"] * churn["members"] / 60
        per_change = (churn["traffic"]["bytes_per_member_s"] - fixed) / changes_per_s
        churn_sends = DEFAULT_CONFIG.retransmit_limit(churn["members"])
        return cls(fixed, per_change / churn_sends, per_suspicion / sends)


def crossing(cost: Any, budget: float) -> float:
    """The smallest cluster size (to 1%) at which ``cost(members)`` reaches ``budget``."""
    low, high = 10.0, 1e9
    if cost(high) < budget:
        return math.inf
    while high / low > 1.01:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if cost(middle) < budget else (low, middle)
    return high
