"""A FIFO-level, cycle-approximate simulation of the kernel's DATAFLOW region.

Built from :func:`.stages.describe_call` - the same stage description the analytic
cycle model (:mod:`.kernel`) uses - it times every loop iteration of every stage:

* a stage issues one iteration a cycle at most (II = 1), in order;
* an iteration that reads FIFO ``f`` waits until the producer's iteration that wrote
  the token has issued and ``latency`` cycles more have passed (+1: the FIFO hop);
* an iteration that writes its k-th token to ``f`` (depth D) waits until the consumer
  has read token k - D by the time the write happens (``latency`` after issue):
  back-pressure, which stalls the whole pipelined loop, as an HLS pipeline does.

Those rules are max-plus constraints between iteration issue times; the schedule is
their least solution.  Two solvers find it, vectorised over runs of iterations
(``numpy.maximum.accumulate``), never a Python loop per cycle:

* :func:`_sweeps` sweeps the stages forward and backward until nothing moves - two
  or three sweeps when back-pressure is rare (the kernel's own depths);
* :func:`_in_order` (when the sweeps do not settle quickly, or ``exact=True``) computes
  each stage's iterations as soon as the iterations they wait on are known, in runs:
  its cost grows with the number of back-pressure episodes, and when no stage can
  advance while some have iterations left, the call is deadlocked.

A call that can never finish - a FIFO whose producer and consumer disagree on the
token count, or a cycle of waits through full and empty FIFOs - raises
:class:`DeadlockError` naming the FIFOs.

:func:`undersized_fifos` reruns a call with each FIFO unbounded and names the FIFOs
whose declared depth costs cycles.  Everything here is SIMULATED from the source's
structure (no Vitis schedule): per-stage latencies are :data:`.stages.STAGE_LATENCY`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NbqError
from .stages import CallDescription, Stage, describe_call

#: Sweeps (forward + backward) before the in-order solver takes over.
MAX_SWEEPS = 6


class DeadlockError(NbqError):
    """The simulated call can never finish: names the FIFO(s) and stages involved."""


@dataclass
class SimResult:
    """One simulated call.  Cycles count from the call's start (the load first)."""

    cycles: int  #: load + DATAFLOW region + tail (flush and status word)
    region_cycles: int  #: from the first iteration issued to the last word written
    load_cycles: int
    stage_end: dict[str, int]  #: cycle each stage's last iteration issued (region time)
    stalls: dict[str, int]  #: cycles each stage did not issue between its first and last
    sweeps: int  #: sweeps, or rounds of the in-order solver


def _tokens(desc: CallDescription) -> dict[str, tuple[Stage, Stage, np.ndarray, np.ndarray]]:
    """FIFO -> (producer, consumer, producer iterations writing, consumer iterations
    reading); raises DeadlockError when the two counts differ."""
    out = {}
    for f, (prod, cons) in desc.fifos.items():
        p, c = desc.stage(prod), desc.stage(cons)
        w = np.flatnonzero(p.writes[f]())
        r = np.flatnonzero(c.reads[f]())
        if len(w) != len(r):
            how = "waits on an empty FIFO" if len(r) > len(w) else "leaves tokens in the FIFO"
            raise DeadlockError(
                f"FIFO {f}: {prod} writes {len(w)} tokens but {cons} reads {len(r)}: "
                f"the call never finishes ({cons} {how})"
            )
        out[f] = (p, c, w, r)
    return out


def _constraints(desc: CallDescription, depth: dict[str, float]):
    """Per stage, the iterations it waits on: a list of (other stage, waiting iterations,
    awaited iterations, offset): t[s][waiting] >= t[other][awaited] + offset."""
    tokens = _tokens(desc)
    lat = {s.name: s.latency for s in desc.stages}
    out: dict[str, list] = {s.name: [] for s in desc.stages}
    for f, (p, c, w, r) in tokens.items():
        out[c.name].append((p.name, r, w, lat[p.name] + 1, f))  # data
        d = depth[f]
        if np.isfinite(d) and len(w) > d:
            d = int(d)
            out[p.name].append((c.name, w[d:], r[: len(r) - d], 1 - lat[p.name], f))  # space
    return out


def _sweeps(desc, cons, max_sweeps: int):
    """Gauss-Seidel sweeps; returns (issue times, sweeps) or None if still moving."""
    idx = {s.name: np.arange(s.iterations, dtype=np.int64) for s in desc.stages}
    t = {k: v.copy() for k, v in idx.items()}
    order = desc.stages + desc.stages[::-1]
    for sweep in range(1, max_sweeps + 1):
        moved = False
        for s in order:
            c = idx[s.name].copy()
            for other, waiting, awaited, off, _ in cons[s.name]:
                np.maximum.at(c, waiting, t[other][awaited] + off)
            new = np.maximum.accumulate(c - idx[s.name]) + idx[s.name]
            if not np.array_equal(new, t[s.name]):
                moved, t[s.name] = True, new
        if not moved:
            return t, sweep
    return None


def _in_order(desc, cons):
    """Each stage advances over the longest run of iterations whose awaited iterations
    are known; returns (issue times, rounds).  DeadlockError when nothing can advance."""
    n = {s.name: s.iterations for s in desc.stages}
    t = {k: np.zeros(v, dtype=np.int64) for k, v in n.items()}
    done = dict.fromkeys(n, 0)
    # per stage and constraint: for each own iteration, the awaited iteration (-1: none),
    # made monotone (a prefix maximum) so a run's end is one searchsorted
    need = {}
    for s, lst in cons.items():
        need[s] = []
        for other, waiting, awaited, off, f in lst:
            req = np.full(n[s], -1, dtype=np.int64)
            req[waiting] = awaited
            need[s].append((other, np.maximum.accumulate(req), waiting, awaited, off, f))
    rounds = 0
    while any(done[s] < n[s] for s in n):
        rounds += 1
        advanced = False
        for s in n:
            i0 = done[s]
            if i0 >= n[s]:
                continue
            i1 = n[s]
            for other, req, *_ in need[s]:  # iterations whose awaited one is computed
                i1 = min(i1, int(np.searchsorted(req, done[other], side="left")))
            if i1 <= i0:
                continue
            c = np.arange(i0, i1, dtype=np.int64)
            if i0:
                c = np.maximum(c, t[s][i0 - 1] + 1 + np.arange(i1 - i0))
            for other, _req, waiting, awaited, off, _f in need[s]:
                lo, hi = np.searchsorted(waiting, [i0, i1])
                if hi > lo:
                    np.maximum.at(c, waiting[lo:hi] - i0, t[other][awaited[lo:hi]] + off)
            base = np.arange(i1 - i0)
            t[s][i0:i1] = np.maximum.accumulate(c - base) + base
            done[s] = i1
            advanced = True
        if not advanced:
            stuck = {s: (done[s], n[s]) for s in n if done[s] < n[s]}
            fifos = sorted({f for s in stuck for (_o, _r, _w, _a, _off, f) in need[s]})
            raise DeadlockError(
                f"simulated call {desc.call}: deadlock - stages {stuck} (iterations done, "
                f"of) wait on each other through FIFO(s) {fifos} with depths "
                f"{ {f: desc.depths.get(f) for f in fifos} }"
            )
    return t, rounds


def simulate(
    desc: CallDescription,
    depths: dict[str, float] | None = None,
    exact: bool = False,
    max_sweeps: int = MAX_SWEEPS,
) -> SimResult:
    """Simulate one described call; ``depths`` overrides FIFO depths (``inf``:
    unbounded); ``exact`` skips the sweeps (both solvers give the same schedule)."""
    depth = {**desc.depths, **(depths or {})}
    cons = _constraints(desc, depth)
    found = None if exact else _sweeps(desc, cons, max_sweeps)
    t, steps = found if found is not None else _in_order(desc, cons)
    stages = desc.stages
    end = {s.name: int(t[s.name][-1]) if s.iterations else 0 for s in stages}
    pack = desc.stage("pack")
    last = end["pack"] + pack.latency if pack.iterations else max(end.values())
    region = last + desc.tail_cycles + 1
    stalls = {
        s.name: int(t[s.name][-1] - t[s.name][0] - (s.iterations - 1)) if s.iterations else 0
        for s in stages
    }
    return SimResult(region + desc.load_cycles, region, desc.load_cycles, end, stalls, steps)


@dataclass
class UndersizedFifo:
    """A FIFO whose declared depth makes the call slower than an unbounded one."""

    fifo: str
    depth: int
    cycles: int  #: region cycles at the declared depths
    unbounded_cycles: int  #: region cycles with this FIFO unbounded
    sufficient_depth: int  #: the smallest power-of-two depth within 1 % of unbounded


def undersized_fifos(desc: CallDescription, tolerance: float = 0.01) -> list[UndersizedFifo]:
    """FIFOs of ``desc`` whose depth costs more than ``tolerance`` of the region's cycles."""
    base = simulate(desc).region_cycles
    free = simulate(desc, dict.fromkeys(desc.fifos, float("inf"))).region_cycles
    if base <= free * (1 + tolerance):
        return []
    out = []
    for f in desc.fifos:
        alone = simulate(desc, {f: float("inf")}).region_cycles
        if alone < base * (1 - tolerance / 2):
            d = desc.depths[f]
            while simulate(desc, {f: d}).region_cycles > alone * (1 + tolerance):
                d *= 2
            out.append(UndersizedFifo(f, desc.depths[f], base, alone, d))
    return out


def simulate_calls(calls, build, batch: int = 1) -> dict[str, float]:
    """Simulated cycles of a list of calls on ``build``, weight loads shared by ``batch``
    images: ``{"cycles", "load_cycles"}`` per image."""
    total = load = 0.0
    for call in calls:
        r = simulate(describe_call(call, build))
        total += r.region_cycles + r.load_cycles / batch
        load += r.load_cycles / batch
    return {"cycles": total, "load_cycles": load}
