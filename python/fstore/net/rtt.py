"""How long a peer takes to answer: smoothed round-trip times (RFC 6298's estimator).

Every request a link completes is a sample, small or large, so the expected
time covers what the peer is really doing (reads, fsyncs, queues under load),
not just the network. A request still unanswered past its expected time is
the signal to ask another holder too (hedging) and to put the peer last.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL = 1.0  # expected seconds before any sample: generous, as RFC 6298 says
FLOOR = 0.2  # never expect an answer sooner: scheduling noise on a busy machine
CEILING = 5.0  # never wait longer than this before asking someone else too
TRANSFER_RATE = 100e6  # bytes/s allowed for a body on top of the round trip
ALPHA = 1 / 8
BETA = 1 / 4


@dataclass
class ResponseTimes:
    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, seconds: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
            return
        self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - seconds)
        self.srtt = (1 - ALPHA) * self.srtt + ALPHA * seconds

    def expected(self, body_bytes: int = 0) -> float:
        """Seconds within which an answer to a request moving ``body_bytes`` is due."""
        rto = INITIAL if self.srtt is None else self.srtt + 4 * self.rttvar
        return min(CEILING, max(FLOOR, rto)) + body_bytes / TRANSFER_RATE
