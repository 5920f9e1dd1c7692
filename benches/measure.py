"""Timing with ``benchmark.pedantic`` plus throughput (GB/s) and peak RSS growth per benchmark."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
    peak_rss_kib: int

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
        with PeakRss() as rss:
            result = cast(_Pedantic, self._benchmark).pedantic(
                workload, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1
            )
        stats = self._benchmark.stats
        if stats is not None:  # None when benchmarks are disabled
            measurement = Measurement(
                group=str(self._benchmark.group),
                name=str(self._benchmark.name),
                nbytes=nbytes,
                best_s=float(stats.stats.min),
                mean_s=float(stats.stats.mean),
                peak_rss_kib=rss.growth_kib,
            )
            self._benchmark.extra_info.update(
                {
                    "bytes": nbytes,
                    "GB/s": measurement.best_gbps,
                    "GB/s mean": measurement.mean_gbps,
                    "peak RSS growth MiB": rss.growth_kib / 1024,
                }
            )
            self._results.append(measurement)
        return result


def summary_lines(results: list[Measurement]) -> list[str]:
    """A plain-text table: one line per benchmark, grouped, in the order they ran."""
    width = max(len(result.name) for result in results)
    header = f"{'benchmark':<{width}}  {'GB/s(best)':>10}  {'GB/s(mean)':>10}  {'peak RSS MiB':>12}"
    lines: list[str] = []
    for group in dict.fromkeys(result.group for result in results):
        lines += ["", f"[{group}]", header]
        lines += [
            f"{r.name:<{width}}  {r.best_gbps:>10.2f}  {r.mean_gbps:>10.2f}"
            f"  {r.peak_rss_kib / 1024:>12.1f}"
            for r in results
            if r.group == group
        ]
    return lines
