"""The measurements of docs/SCALE.md, each on a fresh simulated cluster.

Every function takes a ``ClusterSpec`` (size, seed, loss, latency, config),
runs simulated time and returns a plain dataclass (``dataclasses.asdict`` gives
the JSON the report prints). Times are simulated seconds; a round is one
``gossip_interval``.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from fstore.net.gossip import MemberDead, MemberJoined, MemberSuspected
from fstore.sim.cluster import Cluster, ClusterSpec
from fstore.sim.observe import FalseAlarms, Spread, placement_agreement, time_to

SETTLE = 5.0  # let every core's timers start before a measurement
CHECK_EVERY = 1.0
SECONDS_PER_DAY = 86400.0


def new_cluster(spec: ClusterSpec) -> Cluster:
    # Millions of long-lived records: the collector is kept from walking them again and
    # again (freeze), and given back the previous cluster, a reference cycle (unfreeze).
    gc.unfreeze()
    gc.collect()
    cluster = Cluster(spec)
    gc.collect()
    gc.freeze()
    cluster.run_for(SETTLE)
    return cluster


# --- how fast news spreads ------------------------------------------------------------


@dataclass
class SpreadTrial:
    seconds_99: float
    seconds_all: float
    rounds_99: float
    rounds_all: float
    curve: list[tuple[float, float]]  # (seconds since the start, fraction of members that know)


@dataclass
class FailureTrial(SpreadTrial):
    first_suspect: float  # seconds from the crash
    first_dead: float  # seconds from the crash: the suspicion timed out somewhere
    detected_99: float  # seconds from the crash until 99% knew it dead
    detected_all: float


def _spread_trial(times: list[float], start: float, round_length: float) -> SpreadTrial:
    s99, s_all = time_to(times, 0.99) - start, times[-1] - start
    return SpreadTrial(s99, s_all, s99 / round_length, s_all / round_length, _curve(times, start))


def _curve(times: list[float], start: float, points: int = 100) -> list[tuple[float, float]]:
    reached = [t for t in times if math.isfinite(t)]
    if not reached:
        return []
    step = max(1, len(times) // points)
    curve = [(reached[i] - start, (i + 1) / len(times)) for i in range(0, len(reached), step)]
    curve.append((reached[-1] - start, len(reached) / len(times)))
    return curve


def join_trials(spec: ClusterSpec, trials: int, timeout: float = 60.0) -> list[SpreadTrial]:
    """A new member joins through one seed; until every member has it alive."""
    cluster = new_cluster(spec)
    results = []
    for _ in range(trials):
        start = cluster.now
        population = cluster.running()
        subject = cluster.join_new()
        spread = Spread(subject, (MemberJoined,))
        cluster.listeners.append(spread)
        cluster.run_for(timeout, partial(spread.covers, population))
        cluster.listeners.remove(spread)
        results.append(_spread_trial(spread.times(population), start, spec.config.gossip_interval))
        cluster.run_for(SETTLE)
    return results


def failure_trials(spec: ClusterSpec, trials: int, timeout: float = 300.0) -> list[FailureTrial]:
    """A member crashes; until every other member has declared it dead."""
    cluster = new_cluster(spec)
    results = []
    for _ in range(trials):
        victim = cluster.rng.choice(cluster.running())
        cluster.crash(victim)
        start = cluster.now
        population = cluster.running()
        suspected = Spread(victim, (MemberSuspected,))
        dead = Spread(victim, (MemberDead,))
        cluster.listeners += [suspected, dead]
        cluster.run_for(timeout, partial(dead.covers, population))
        cluster.listeners.remove(suspected)
        cluster.listeners.remove(dead)
        times = dead.times(population)
        first_dead = times[0]
        spread = _spread_trial(times, first_dead, spec.config.gossip_interval)
        first_suspect = min(suspected.first.values(), default=first_dead)
        results.append(
            FailureTrial(
                **spread.__dict__,
                first_suspect=first_suspect - start,
                first_dead=first_dead - start,
                detected_99=time_to(times, 0.99) - start,
                detected_all=times[-1] - start,
            )
        )
        cluster.run_for(SETTLE)
    return results


# --- steady state: false alarms, bandwidth, placement -----------------------------------


@dataclass
class Traffic:
    bytes_per_member_s: float  # mean over members of what each sends (msgpack bytes)
    max_member_bytes_s: float
    messages_per_member_s: float
    by_kind: dict[str, float] = field(default_factory=dict)  # bytes per member per second


def _traffic(cluster: Cluster, seconds: float, members: float) -> Traffic:
    net = cluster.net
    total = sum(net.bytes_sent.values())
    by_kind = {k: v / members / seconds for k, v in sorted(net.bytes_by_kind.items())}
    return Traffic(
        total / members / seconds,
        max(net.bytes_sent.values(), default=0) / seconds,
        net.messages_sent / members / seconds,
        by_kind,
    )


def _reset_traffic(cluster: Cluster) -> None:
    cluster.net.bytes_sent.clear()
    cluster.net.bytes_by_kind.clear()
    cluster.net.messages_sent = 0


@dataclass
class SteadyResult:
    members: int
    loss: float
    seconds: float
    member_days: float
    suspicions: int  # incidents: a running member suspected (refuted or not)
    false_deaths: int  # incidents: a running member declared dead
    dead_views: int  # member-views of those false deaths
    false_per_member_day: float
    false_per_member_day_bound: float  # 95% upper bound (rule of three when none was seen)
    false_per_hour: float  # in the whole cluster
    traffic: Traffic
    placement_truth: float
    placement_consistent: float


def steady(spec: ClusterSpec, seconds: float, samples: int = 64) -> SteadyResult:
    """No change at all but random loss: the cost of watching, and its false alarms."""
    cluster = new_cluster(spec)
    alarms = FalseAlarms(cluster.is_running)
    cluster.listeners.append(alarms)
    _reset_traffic(cluster)
    cluster.run_for(seconds)
    traffic = _traffic(cluster, seconds, spec.members)
    truth, consistent = _placement(cluster, samples)
    member_days = spec.members * seconds / SECONDS_PER_DAY
    deaths = len(alarms.deaths)
    return SteadyResult(
        members=spec.members,
        loss=spec.loss,
        seconds=seconds,
        member_days=member_days,
        suspicions=len(alarms.suspicions),
        false_deaths=deaths,
        dead_views=alarms.dead_views,
        false_per_member_day=deaths / member_days,
        false_per_member_day_bound=_poisson_upper_95(deaths) / member_days,
        false_per_hour=deaths / seconds * 3600,
        traffic=traffic,
        placement_truth=truth,
        placement_consistent=consistent,
    )


def _poisson_upper_95(count: int) -> float:
    """One-sided 95% upper bound of a Poisson mean after ``count`` events (3.0 for none)."""
    if count == 0:
        return 3.0
    # Wilson-Hilferty approximation of the chi-square quantile: within 1% for count >= 1.
    k = count + 1
    z = 1.6449
    return k * (1 - 1 / (9 * k) + z / (3 * math.sqrt(k))) ** 3


def _placement(cluster: Cluster, samples: int) -> tuple[float, float]:
    sampler = random.Random(cluster.spec.seed + 1)  # sampling must not perturb the run
    nodes = [cluster.net.nodes[n] for n in cluster.running()]
    return placement_agreement(nodes, cluster.running(), cluster.ever, sampler, samples=samples)


# --- churn ----------------------------------------------------------------------------


@dataclass
class ChurnResult:
    members: int
    per_minute: float
    warmup: float
    seconds: float
    crashes_and_joins: int
    traffic: Traffic
    placement_truth: float  # mean over the samples
    placement_consistent: float
    samples: list[tuple[float, float, float]]  # (time, truth, consistent)
    false_deaths: int


def churn(
    spec: ClusterSpec,
    per_minute: float,
    seconds: float,
    warmup: float = 60.0,
    every: float = 15.0,
    samples: int = 16,
) -> ChurnResult:
    """Members crash and new ones join, ``per_minute`` of the cluster each minute, each way.

    Placement is sampled every ``every`` seconds once ``warmup`` has passed (long
    enough for the first crashes to be detected), and traffic counted from then.
    """
    cluster = new_cluster(spec)
    alarms = FalseAlarms(cluster.is_running)
    cluster.listeners.append(alarms)
    start = cluster.now
    cluster.churn(per_minute, start + warmup + seconds)
    cluster.run_for(warmup)
    _reset_traffic(cluster)
    joined_before = len(cluster.ever)
    points: list[tuple[float, float, float]] = []
    counted = 0.0
    while counted < seconds:
        step = min(every, seconds - counted)
        cluster.run_for(step)
        counted += step
        truth, consistent = _placement(cluster, samples)
        points.append((cluster.now - start, truth, consistent))
    traffic = _traffic(cluster, seconds, spec.members)
    return ChurnResult(
        members=spec.members,
        per_minute=per_minute,
        warmup=warmup,
        seconds=seconds,
        crashes_and_joins=2 * (len(cluster.ever) - joined_before),
        traffic=traffic,
        placement_truth=statistics.fmean(p[1] for p in points),
        placement_consistent=statistics.fmean(p[2] for p in points),
        samples=points,
        false_deaths=len(alarms.deaths),
    )


# --- partition ------------------------------------------------------------------------


@dataclass
class PartitionResult:
    members: int
    minority: float
    seconds_apart: float
    majority_split: float  # seconds until every member of the larger side saw only its side
    minority_split: float  # the same for the smaller side (Lifeguard slows it: see SCALE.md)
    healed_after: float  # seconds from the end of the partition until every view is whole again


def partition(
    spec: ClusterSpec, minority: float, seconds_apart: float, timeout: float = 600.0
) -> PartitionResult:
    """Cut the cluster in two for ``seconds_apart``; then how long until all views are whole."""
    cluster = new_cluster(spec)
    running = cluster.running()
    cluster.rng.shuffle(running)
    cut = int(len(running) * minority)
    small, large = set(running[:cut]), set(running[cut:])
    cluster.net.partition([small, large])
    start = cluster.now
    split_at = {"small": math.inf, "large": math.inf}

    def split() -> bool:
        for name, side in (("small", small), ("large", large)):
            if split_at[name] == math.inf and _sees_exactly(cluster, side, len(side)):
                split_at[name] = cluster.now - start
        return all(math.isfinite(t) for t in split_at.values())

    _run_until(cluster, split, seconds_apart)
    cluster.run_for(max(0.0, start + seconds_apart - cluster.now))
    cluster.net.heal()
    healed = cluster.now
    whole = partial(_sees_exactly, cluster, running, len(running))
    healed_after = _run_until(cluster, whole, timeout) - healed
    return PartitionResult(
        spec.members, minority, seconds_apart, split_at["large"], split_at["small"], healed_after
    )


def _sees_exactly(cluster: Cluster, side: Iterable[bytes], count: int) -> bool:
    return all(cluster.net.nodes[n].live_count == count for n in side)


def _run_until(cluster: Cluster, done: Callable[[], bool], timeout: float) -> float:
    """Run until ``done()`` holds (checked every CHECK_EVERY seconds); when it did, or inf."""
    end = cluster.now + timeout
    while cluster.now < end:
        cluster.run_for(min(CHECK_EVERY, end - cluster.now))
        if done():
            return cluster.now
    return math.inf


# --- bandwidth as the cluster grows -------------------------------------------------------


@dataclass
class ScalePoint:
    members: int
    steady: Traffic  # 1% loss, no change
    churn: Traffic | None  # members crashing and joining


def scale_point(
    members: int, seed: int, seconds: float, churn_per_minute: float | None, warmup: float
) -> ScalePoint:
    quiet = steady(ClusterSpec(members, seed, loss=0.01), seconds, samples=4).traffic
    busy = None
    if churn_per_minute:
        spec = ClusterSpec(members, seed)
        busy = churn(spec, churn_per_minute, seconds, warmup, every=seconds, samples=4).traffic
    return ScalePoint(members, quiet, busy)
