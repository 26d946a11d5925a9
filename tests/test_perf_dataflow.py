"""The dataflow simulation (pynq_nbq/perfmodel/dataflow.py) against the cycle model.

Both are built from one stage description (pynq_nbq/perfmodel/stages.py) whose FIFO
depths are the header's; the simulation must agree with the analytic model within 10 %
on every engine layer of the shipped networks and on a sweep of deep and odd shapes,
find a planted deadlock and a planted under-sized FIFO, and stay fast.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from pynq_nbq.perfmodel import NETWORKS, builtin_network, dataflow, kernel, load_board, stages
from pynq_nbq.perfmodel.model import fuse_pools, placement
from pynq_nbq.perfmodel.stages import Build, Call, describe_call
from pynq_nbq.streams import parse_params_header

ZCU102 = load_board("zcu102")
HEADER = parse_params_header()
#: Deep and odd shapes: (h, w, c_in, c_out, k, pool)
SWEEP = [
    (28, 28, 512, 64, 3, False),  # the deep layer
    (32, 8, 512, 64, 3, False),
    (14, 14, 512, 512, 3, True),
    (7, 7, 512, 10, 1, False),
    (5, 7, 3, 1, 3, False),
    (9, 13, 33, 65, 3, True),
    (11, 5, 100, 129, 1, False),
    (28, 100, 64, 128, 3, False),  # column tiles
    (3, 3, 1, 1, 3, False),
    (6, 6, 17, 9, 3, True),
]


def default_build(name: str) -> Build:
    return kernel.build_of(name, *kernel.choose_build(name, ZCU102))


def test_fifo_depths_are_the_headers():
    """stages.fifo_depths is nbq_params.h's NBQ_*_DEPTH (evaluated for the default build)."""
    depths = stages.fifo_depths(HEADER["NBQ_PM"], HEADER["NBQ_MAX_CIN"])
    for fifo in ("px", "wins", "accs", "outs", "pooled"):
        assert depths[fifo] == HEADER[f"NBQ_{fifo.upper()}_DEPTH"], fifo
    assert set(depths) == set(stages.FIFOS)


def _engine_layers(network: str):
    layers = builtin_network(network)
    places = [placement(lay, "engine") for lay in layers]
    work, fused = fuse_pools(list(layers), places)
    return [
        lay
        for lay, p, f in zip(work, places, fused, strict=True)
        if p[0] == "fpga" and not f and lay.in_channels <= HEADER["NBQ_MAX_CIN"]
    ]


@pytest.mark.parametrize("build", list(kernel.BUILDS))
def test_simulation_agrees_with_the_model_on_every_shipped_layer(build):
    b = default_build(build)
    checked = 0
    t0 = time.perf_counter()
    for network in NETWORKS:
        for lay in _engine_layers(network):
            for batch in (1, 64):
                c = kernel.layer_cycles(lay, b, batch, simulate=True)
                assert 0.9 <= c["sim_over_model"] <= 1.1, (network, lay.name, batch, c)
                checked += 1
    assert checked >= 12
    assert time.perf_counter() - t0 < 60  # vectorised: seconds, not minutes


@pytest.mark.parametrize("build", list(kernel.BUILDS))
def test_deep_and_odd_shapes_within_ten_percent(build):
    b = default_build(build)
    for h, w, ci, co, k, pool in SWEEP:
        for call in stages.plan_calls(h, w, ci, co, k, pool, b):
            model = kernel.call_cycles(call, b)["total"]
            sim = dataflow.simulate(describe_call(call, b)).cycles
            assert 0.9 <= sim / model <= 1.10, (build, call, sim, model)


def test_shipped_depths_are_not_undersized_on_the_deep_layers():
    for build in kernel.BUILDS:
        b = default_build(build)
        for call in (Call(28, 28, 512, 64, 3, False, (1, 1, 1, 1)), Call(32, 8, 512, 64, 3, False)):
            assert dataflow.undersized_fifos(describe_call(call, b)) == [], (build, call)


def test_planted_undersized_fifo_is_found():
    """px at the old depth 4: the deep layer loses > 10 % and px is named, with a depth
    that suffices."""
    b = default_build("svpe3")
    call = Call(6, 8, 512, 64, 3, False)  # a deep tile (small: keeps the test fast)
    good = dataflow.simulate(describe_call(call, b))
    small = describe_call(call, b, {"px": 4})
    bad = dataflow.simulate(small)
    assert bad.region_cycles > 1.1 * good.region_cycles
    found = {u.fifo: u for u in dataflow.undersized_fifos(small)}
    assert "px" in found and found["px"].depth == 4
    assert found["px"].sufficient_depth <= stages.fifo_depths(b.pm, b.max_cin)["px"]
    assert bad.stalls["reader"] > good.stalls["reader"]


def test_planted_deadlock_is_found():
    """pack waiting for the status word (st) before its first output - the reader writes
    st only after its last word, which cannot leave while pooled is full: a deadlock."""
    b = Build("svpe", 4, 2, 64, 16, 16, 8)
    desc = describe_call(Call(6, 6, 8, 4, 3, False, (1, 1, 1, 1)), b)
    assert dataflow.simulate(desc).cycles > 0  # as shipped: live
    pack = desc.stage("pack")
    n = pack.iterations
    pack.reads["st"] = lambda: np.arange(n) == 0  # the planted bug
    with pytest.raises(dataflow.DeadlockError, match="deadlock.*st"):
        dataflow.simulate(desc)
    with pytest.raises(dataflow.DeadlockError, match="deadlock"):
        dataflow.simulate(desc, exact=True)


def test_token_count_mismatch_is_a_deadlock():
    b = Build("svpe", 4, 2, 64, 16, 16, 8)
    desc = describe_call(Call(4, 4, 4, 2, 3, False, (1, 1, 1, 1)), b)
    window = desc.stage("window")
    n = window.iterations
    window.writes["wins"] = lambda: np.arange(n) % 2 == 0  # emits the wrong windows
    with pytest.raises(dataflow.DeadlockError, match="FIFO wins: window writes"):
        dataflow.simulate(desc)


def test_both_solvers_give_the_same_schedule():
    b = default_build("vpe")
    for call in (
        Call(10, 9, 40, 12, 3, True, (1, 1, 1, 1)),
        Call(7, 7, 64, 10, 1, False),
        Call(8, 8, 512, 64, 3, False, (1, 0, 1, 1)),
    ):
        for depths in ({}, {"px": 3, "wins": 1}):
            desc = describe_call(call, b, depths)
            fast, exact = dataflow.simulate(desc), dataflow.simulate(desc, exact=True)
            assert dataclasses.replace(fast, sweeps=0) == dataclasses.replace(exact, sweeps=0)


def test_back_pressure_slows_a_stage_down():
    """A consumer slower than its producer: the producer's stalls grow as its FIFO shrinks."""
    b = default_build("svpe3")
    call = Call(16, 16, 512, 8, 3, False, (1, 1, 1, 1))  # compute-light, reader-heavy
    deep = dataflow.simulate(describe_call(call, b, {"wins": 64}))
    shallow = dataflow.simulate(describe_call(call, b, {"wins": 1}))
    assert shallow.stalls["window"] >= deep.stalls["window"]
    assert shallow.region_cycles >= deep.region_cycles
