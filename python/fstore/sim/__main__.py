"""``python -m fstore.sim``: run the membership measurements of docs/SCALE.md.

    python -m fstore.sim report --members 1000 --json report-1000.json
    python -m fstore.sim scaling --members 250,500,1000,2000,5000 --json scaling.json
    python -m fstore.sim table report-1000.json report-10000-*.json
    python -m fstore.sim plot --report report-1000.json --report report-10000-*.json \\
        --scaling scaling.json --out docs

Tables go to stdout, progress to stderr; ``--json -`` prints the JSON instead of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fstore.sim import report, scenarios


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        return _report(args)
    if args.command == "scaling":
        return _scaling(args)
    if args.command == "table":
        print(report.table(report.merge(_load(args.reports))))
        return 0
    return _plot(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fstore.sim", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    one = commands.add_parser("report", help="every measurement at one cluster size")
    one.add_argument("--members", type=int, required=True)
    one.add_argument("--seed", type=int, default=1)
    one.add_argument("--trials", type=int, default=5, help="joins and failures (default 5)")
    one.add_argument("--steady-seconds", type=float, default=600.0, help="each loss rate's run")
    one.add_argument("--churn-seconds", type=float, default=120.0, help="measured, after...")
    one.add_argument("--churn-warmup", type=float, default=60.0, help="...this much churn")
    one.add_argument("--partition-minority", type=float, default=0.3)
    one.add_argument(
        "--only", default=",".join(report.SECTIONS), help="comma-separated sections (default: all)"
    )
    one.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': stdout)")

    sweep = commands.add_parser("scaling", help="bytes per member as the cluster grows")
    sweep.add_argument("--members", default="250,500,1000,2000,5000", help="comma-separated sizes")
    sweep.add_argument("--seed", type=int, default=1)
    sweep.add_argument("--seconds", type=float, default=60.0)
    sweep.add_argument("--churn", type=float, default=0.05, help="per minute; 0 to skip")
    sweep.add_argument("--churn-warmup", type=float, default=40.0)
    sweep.add_argument("--json", metavar="FILE")

    show = commands.add_parser("table", help="reports side by side, from their JSON files")
    show.add_argument("reports", nargs="+", type=Path, help="sections of one size are merged")

    draw = commands.add_parser("plot", help="PNG figures from the JSON of report and scaling")
    draw.add_argument("--report", action="append", default=[], type=Path, help="repeatable")
    draw.add_argument("--scaling", action="append", default=[], type=Path, help="repeatable")
    draw.add_argument("--out", type=Path, default=Path("docs"))
    return parser


def _report(args: argparse.Namespace) -> int:
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = set(sections) - set(report.SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {', '.join(report.SECTIONS)}")
    spec = report.ReportSpec(
        members=args.members,
        seed=args.seed,
        trials=args.trials,
        steady_seconds=args.steady_seconds,
        churn_seconds=args.churn_seconds,
        churn_warmup=args.churn_warmup,
        partition_minority=args.partition_minority,
        sections=sections,
    )
    results = report.run(spec, _progress)
    _emit(results, args.json, report.table([results]))
    return 0


def _scaling(args: argparse.Namespace) -> int:
    points = []
    for members in (int(n) for n in args.members.split(",")):
        _progress(f"scaling: {members} members ...")
        point = scenarios.scale_point(
            members, args.seed, args.seconds, args.churn or None, args.churn_warmup
        )
        points.append(asdict(point))
    lines = ["| members | steady, 1% loss (B/s) | churn (B/s) |", "| ---: | ---: | ---: |"]
    for p in points:
        churned = f"{p['churn']['bytes_per_member_s']:,.0f}" if p["churn"] else "—"
        lines.append(f"| {p['members']:,} | {p['steady']['bytes_per_member_s']:,.0f} | {churned} |")
    _emit(points, args.json, "\n".join(lines))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fstore.sim import plots

    reports = report.merge(_load(args.report))
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if reports:
        written += [plots.spread(reports, args.out), plots.churn_placement(reports, args.out)]
    if args.scaling:
        points: list[dict[str, Any]] = [
            point for path in args.scaling for point in json.loads(path.read_text())
        ]
        written.append(plots.bandwidth(points, reports, args.out))
        for case, members in plots.limits(reports).items():
            print(f"{case}: 5 KB/s per member at about {members:,.0f} members")
    for path in written:
        print(path)
    return 0


def _load(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in paths]


def _emit(results: Any, destination: str | None, text: str) -> None:
    if destination == "-":
        json.dump(results, sys.stdout, indent=1)
        print()
        return
    if destination:
        Path(destination).write_text(json.dumps(results, indent=1) + "\n")
    print(text)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
