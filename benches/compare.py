"""Run the in-process throughput benchmarks of two checkouts alternately; merge their best figures.

On a machine shared with other work one run says little, so each checkout runs ``--runs``
times, in turns (before, after, before, ...), and each benchmark keeps its best figures over
the runs: the highest GB/s, the lowest CPU s/GiB, the highest peak RSS. Each checkout is run
with its own package and built extension (``python/fstore/_native.abi3.so``) and, unless
``--benches`` names one checkout whose benchmarks both should run, its own ``benches``.
A benchmark one checkout cannot run (an API it lacks) fails there and shows ``-``. Usage::

    .venv/bin/python benches/compare.py BEFORE_CHECKOUT AFTER_CHECKOUT --runs 5 \
        --benches AFTER_CHECKOUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BENCH_FILES = ("benches/test_native_throughput.py", "benches/test_pipeline_throughput.py")


@dataclass
class Best:
    """The best figures of one benchmark in one checkout, over all runs."""

    gbps: float = 0.0
    cpu_s_per_gib: float = float("inf")
    peak_rss_mib: float = 0.0

    def add(self, info: dict[str, float]) -> None:
        self.gbps = max(self.gbps, info["GB/s"])
        self.cpu_s_per_gib = min(self.cpu_s_per_gib, info.get("CPU s/GiB", float("inf")))
        self.peak_rss_mib = max(self.peak_rss_mib, info["peak RSS growth MiB"])


Key = tuple[str, str]
"""(group, benchmark name)."""


def run_once(
    checkout: Path, benches: Path, select: str, python: str
) -> tuple[list[tuple[Key, dict[str, float]]], bool]:
    """One pytest run of the benchmarks in ``benches`` with the package of ``checkout``:
    (group, name) and extra_info of each benchmark that ran, and whether all of them passed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [python, "-m", "pytest", *BENCH_FILES, "--benchmark-enable", "--benchmark-only"]
        command += ["-p", "no:cacheprovider", "-q", "-k", select, f"--benchmark-json={report}"]
        env = dict(os.environ, PYTHONPATH=str(checkout / "python"))
        done = subprocess.run(command, cwd=benches, env=env, check=False, capture_output=True)
        if not report.exists():
            sys.exit(f"no benchmark ran in {checkout}:\n{done.stdout.decode()[-2000:]}")
        benchmarks = json.loads(report.read_text())["benchmarks"]
    figures = [((b["group"], b["name"]), b["extra_info"]) for b in benchmarks]
    return figures, done.returncode == 0


def table(labels: tuple[str, str], best: dict[Key, dict[str, Best]]) -> Iterable[str]:
    """Per group: GB/s and CPU s/GiB of both checkouts, and the second one's peak RSS."""
    before, after = labels
    width = max(len(name) for _, name in best)
    header = (
        f"{'benchmark':<{width}}  {before + ' GB/s':>12}  {after + ' GB/s':>12}"
        f"  {before + ' CPU s/GiB':>17}  {after + ' CPU s/GiB':>17}  {after + ' RSS MiB':>15}"
    )

    def show(figures: Best | None, field: str, digits: int) -> str:
        value: float = 0.0 if figures is None else getattr(figures, field)
        return "-" if value in (0.0, float("inf")) else f"{value:.{digits}f}"

    for group in dict.fromkeys(g for g, _ in best):
        yield ""
        yield f"[{group}]"
        yield header
        for (g, name), figures in best.items():
            if g != group:
                continue
            b, a = figures.get(before), figures.get(after)
            yield (
                f"{name:<{width}}  {show(b, 'gbps', 2):>12}  {show(a, 'gbps', 2):>12}"
                f"  {show(b, 'cpu_s_per_gib', 3):>17}  {show(a, 'cpu_s_per_gib', 3):>17}"
                f"  {show(a, 'peak_rss_mib', 1):>15}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="checkout root with a built extension")
    parser.add_argument("after", type=Path, help="checkout root with a built extension")
    parser.add_argument("--runs", type=int, default=3, help="runs of each checkout (default 3)")
    parser.add_argument(
        "--benches", type=Path, help="the checkout whose benches both run (default: their own)"
    )
    parser.add_argument("-k", dest="select", default="not network and not link")
    parser.add_argument("--labels", nargs=2, default=("before", "after"), metavar="LABEL")
    args = parser.parse_args()
    labels: tuple[str, str] = (args.labels[0], args.labels[1])
    checkouts = dict(zip(labels, (args.before.resolve(), args.after.resolve()), strict=True))
    best: dict[Key, dict[str, Best]] = {}
    for run in range(args.runs):
        for label, checkout in checkouts.items():
            load = os.getloadavg()[0]
            benches = (args.benches or checkout).resolve()
            figures, passed = run_once(checkout, benches, args.select, sys.executable)
            for key, info in figures:
                best.setdefault(key, {}).setdefault(label, Best()).add(info)
            note = "" if passed else "; some benchmarks failed"
            print(f"run {run + 1}/{args.runs} {label} done (load average before: {load:.1f}{note})")
    for line in table(labels, best):
        print(line)


if __name__ == "__main__":
    main()
