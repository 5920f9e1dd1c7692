"""Timing with ``benchmark.pedantic`` plus throughput and peak RSS per benchmark.

Two kinds of result: :class:`Measurement` (an in-process native workload: GB/s and this
process's peak RSS growth) and :class:`NetworkMeasurement` (a transfer between node processes,
timed once: MB/s, and every node process's own peak RSS).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, TypeVar, cast

from pytest_benchmark.fixture import BenchmarkFixture

T = TypeVar("T")

ROUNDS = 5
WARMUP_ROUNDS = 1  # the first round also faults in any memory the workload reuses
SAMPLE_INTERVAL = 0.005  # seconds, for the fallback VmRSS sampler

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int:
    """One ``kB`` field of ``/proc/self/status``, such as ``VmRSS`` or ``VmHWM``, in KiB."""
    with open(_STATUS) as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in {_STATUS}")
    return int(match.group(1))


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakRss:
    """The largest growth of this process's resident set while the ``with`` block runs.

    Exact where ``/proc/self/clear_refs`` may be written (the kernel's VmHWM is reset on
    entry and read on exit); otherwise VmRSS is sampled every 5 ms in a background thread,
    which needs the GIL and so sees inside native calls (they release it) but may miss a
    short spike in code that holds it.
    """

    def __init__(self) -> None:
        self.growth_kib = 0
        self._baseline = 0
        self._peak = 0
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> Self:
        exact = _reset_peak()
        self._baseline = self._peak = _status_kib("VmRSS")
        if not exact:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL):
            self._peak = max(self._peak, _status_kib("VmRSS"))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._sampler is None:
            self._peak = _status_kib("VmHWM")
        else:
            self._done.set()
            self._sampler.join()
            self._peak = max(self._peak, _status_kib("VmRSS"))
        self.growth_kib = max(0, self._peak - self._baseline)


@dataclass(frozen=True)
class Measurement:
    """One benchmark's result, for the summary table."""

    group: str
    name: str
    nbytes: int
    best_s: float
    mean_s: float
    cpu_s: float
    peak_rss_kib: int

    @property
    def cpu_s_per_gib(self) -> float:
        """Process CPU seconds (all threads) per GiB of input, in the round that used least."""
        return self.cpu_s / (self.nbytes / 2**30)

    @property
    def best_gbps(self) -> float:
        return self.nbytes / self.best_s / 1e9

    @property
    def mean_gbps(self) -> float:
        return self.nbytes / self.mean_s / 1e9


class _Pedantic(Protocol):
    """The typed subset of :class:`BenchmarkFixture` used here (the plugin ships no annotations)."""

    def pedantic(
        self,
        target: Callable[[], T],
        *,
        setup: Callable[[], None] | None = None,
        rounds: int,
        warmup_rounds: int,
        iterations: int,
    ) -> T: ...


class Bench:
    """Runs one workload under ``benchmark.pedantic`` and records its GB/s and peak RSS."""

    def __init__(self, benchmark: BenchmarkFixture, results: list[Measurement]) -> None:
        self._benchmark = benchmark
        self._results = results

    def __call__(self, nbytes: int, workload: Callable[[], T]) -> T:
        """Time ``workload`` (which processes ``nbytes`` bytes) and return its last result.

        With ``--benchmark-disable`` the workload runs exactly once, untimed: a smoke check.
        """
        cpu_times: list[float] = []

        def counted() -> T:
            start = time.process_time()
            result = workload()
            cpu_times.append(time.process_time() - start)
            return result

        with PeakRss() as rss:
            result = cast(_Pedantic, self._benchmark).pedantic(
                counted, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1
            )
        stats = self._benchmark.stats
        if stats is not None:  # None when benchmarks are disabled
            measurement = Measurement(
                group=str(self._benchmark.group),
                name=str(self._benchmark.name),
                nbytes=nbytes,
                best_s=float(stats.stats.min),
                mean_s=float(stats.stats.mean),
                cpu_s=min(cpu_times[WARMUP_ROUNDS:]),
                peak_rss_kib=rss.growth_kib,
            )
            self._benchmark.extra_info.update(
                {
                    "bytes": nbytes,
                    "GB/s": measurement.best_gbps,
                    "GB/s mean": measurement.mean_gbps,
                    "CPU s/GiB": measurement.cpu_s_per_gib,
                    "peak RSS growth MiB": rss.growth_kib / 1024,
                }
            )
            self._results.append(measurement)
        return result


def summary_lines(results: list[Measurement]) -> list[str]:
    """A plain-text table: one line per benchmark, grouped, in the order they ran."""
    width = max(len(result.name) for result in results)
    header = (
        f"{'benchmark':<{width}}  {'GB/s(best)':>10}  {'GB/s(mean)':>10}  {'CPU s/GiB':>9}"
        f"  {'peak RSS MiB':>12}"
    )
    lines: list[str] = []
    for group in dict.fromkeys(result.group for result in results):
        lines += ["", f"[{group}]", header]
        lines += [
            f"{r.name:<{width}}  {r.best_gbps:>10.2f}  {r.mean_gbps:>10.2f}"
            f"  {r.cpu_s_per_gib:>9.3f}  {r.peak_rss_kib / 1024:>12.1f}"
            for r in results
            if r.group == group
        ]
    return lines


# --- transfers between node processes -------------------------------------------------------


def timed_once(
    benchmark: BenchmarkFixture, target: Callable[[], T], setup: Callable[[], None] | None = None
) -> tuple[T, float | None]:
    """Run ``setup`` untimed, then time one call of ``target``: (its result, seconds).

    The seconds are None when benchmarks are disabled (the call still runs once: a smoke check).
    """
    result = cast(_Pedantic, benchmark).pedantic(
        target, setup=setup, rounds=1, warmup_rounds=0, iterations=1
    )
    stats = benchmark.stats
    return result, None if stats is None else float(stats.stats.min)


@dataclass(frozen=True)
class Goal:
    """A target the issue sets, and whether this run met it."""

    text: str
    met: bool

    def __str__(self) -> str:
        return f"{self.text} {'met' if self.met else 'MISSED'}"


@dataclass(frozen=True)
class NetworkMeasurement:
    """One timed transfer (or its disk bound) of a file of ``nbytes`` bytes, for the summary.

    ``peak_rss``: each node process's peak resident set (VmHWM) in bytes, by node name.
    ``details``: further figures for ``extra_info``, also printed (``key value`` pairs).
    """

    group: str
    name: str
    nbytes: int
    seconds: float
    ratio: float | None = None
    goals: tuple[Goal, ...] = ()
    peak_rss: dict[str, int] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6

    def record(self, benchmark: BenchmarkFixture, results: list[NetworkMeasurement]) -> None:
        """Add to the summary, and to the benchmark's ``extra_info``."""
        info: dict[str, object] = {"bytes": self.nbytes, "seconds": self.seconds, "MB/s": self.mbps}
        if self.ratio is not None:
            info["ratio"] = self.ratio
        if self.peak_rss:
            info["peak RSS MB"] = {node: rss / 1e6 for node, rss in self.peak_rss.items()}
        info.update(self.details)
        info.update({f"goal: {goal.text}": goal.met for goal in self.goals})
        benchmark.extra_info.update(info)
        results.append(self)

    def detail_text(self) -> str:
        rss = "  ".join(f"{node} {peak / 1e6:.0f}" for node, peak in self.peak_rss.items())
        parts = [f"peak RSS MB: {rss}"] if rss else []
        parts += [f"{key} {value:.1f}" for key, value in self.details.items()]
        return "; ".join(parts)


def network_summary_lines(results: list[NetworkMeasurement]) -> list[str]:
    """A plain-text table: one line per transfer, grouped, in the order they ran."""
    width = max(len(result.name) for result in results)
    goals = {id(r): "; ".join(map(str, r.goals)) or "-" for r in results}
    goal_width = max(len("goals"), *(len(text) for text in goals.values()))
    header = (
        f"{'benchmark':<{width}}  {'MB/s':>7}  {'seconds':>7}  {'ratio':>5}  "
        f"{'goals':<{goal_width}}  details"
    )
    lines: list[str] = []
    for group in dict.fromkeys(result.group for result in results):
        lines += ["", f"[{group}]", header]
        for r in results:
            if r.group != group:
                continue
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
            lines.append(
                f"{r.name:<{width}}  {r.mbps:>7.1f}  {r.seconds:>7.3f}  {ratio:>5}  "
                f"{goals[id(r)]:<{goal_width}}  {r.detail_text()}".rstrip()
            )
    return lines


# --- rows of named figures (small files, gets through HTTP) ----------------------------------


@dataclass(frozen=True)
class FigureRow:
    """One measurement shown as named figures (already formatted), with its goals."""

    group: str
    name: str
    figures: dict[str, str]
    goals: tuple[Goal, ...] = ()

    def record(self, benchmark: BenchmarkFixture, results: list[FigureRow]) -> None:
        benchmark.extra_info.update(self.figures)
        benchmark.extra_info.update({f"goal: {goal.text}": goal.met for goal in self.goals})
        results.append(self)


def figure_summary_lines(results: list[FigureRow]) -> list[str]:
    """A plain-text table per group: one line per row, its figures in columns, then goals."""
    lines: list[str] = []
    for group in dict.fromkeys(row.group for row in results):
        rows = [row for row in results if row.group == group]
        width = max(len(row.name) for row in rows)
        keys = list(dict.fromkeys(key for row in rows for key in row.figures))
        widths = {k: max(len(k), *(len(row.figures.get(k, "-")) for row in rows)) for k in keys}
        header = f"{'benchmark':<{width}}  " + "  ".join(f"{k:>{widths[k]}}" for k in keys)
        lines += ["", f"[{group}]", header + "  goals"]
        for row in rows:
            values = "  ".join(f"{row.figures.get(k, '-'):>{widths[k]}}" for k in keys)
            goals = "; ".join(map(str, row.goals)) or "-"
            lines.append(f"{row.name:<{width}}  {values}  {goals}")
    return lines
