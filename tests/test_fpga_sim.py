"""The ``fpga`` backend through the unmodified pynq library, on simulated boards.

``pynq.Overlay(download=False)``, ``MMIO``, ``allocate`` and ``pynq.lib.dma.DMA``
drive :mod:`pynq_nbq.sim.board` (PG021 DMA model, DDR behind a CPU cache, the csim
kernel behind its register file).  Checked on the ZCU102 (its buffers above 4 GiB, so
every call needs both halves of the 64-bit DMA addresses): bit-exactness on random
layers (every n, tiling, saturation), the register transactions of one call in order,
compile-once packing, flush/invalidate, every injected fault (clear error within
the deadline, next call correct), check-before-use, the CLI and the server.  On every
board's block design (ZCU104, KV260: PS8; PYNQ-Z2: PS7, 32-bit DMA): the shipped
bundles bit-exact through the backend, and the DMA addressing of its width.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pynq") is None
    or shutil.which(os.environ.get("CXX", "g++")) is None
    or importlib.util.find_spec("hls4ml") is None,
    reason="the simulated board needs pynq, g++ and the hls4ml wheel's ap_int headers",
)

from test_hls_csim import SMALL, _random_layers, random_input, random_spec  # noqa: E402

from pynq_nbq.kernel import packing  # noqa: E402
from pynq_nbq.kernel.protocol import (  # noqa: E402
    STATUS_MAGIC,
    WORD_BYTES,
    DeviceError,
    DeviceTimeout,
    KernelError,
)
from pynq_nbq.kernel.scheduler import CompiledConv, run_conv  # noqa: E402
from pynq_nbq.ops import conv_layer  # noqa: E402
from pynq_nbq.sim.reference import RecordingDevice, ReferenceDevice  # noqa: E402

PES = ("svpe", "vpe")
TIMEOUT_S = 0.3  #: the driver's base deadline in these tests
#: DMA buffers of the ZCU102 tests: in its upper DDR, above 4 GiB (a driver that drops the
#: high half of an address gets a decode error there)
HIGH_DDR = 0x8_0000_0000


@pytest.fixture(scope="module")
def boards():
    """{pe: (simulated ZCU102 with the small build, FpgaConvDevice)}."""
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimBoard

    out = {}
    for pe in PES:
        board = SimBoard("zcu102", defines=SMALL[pe], ddr_base=HIGH_DDR)
        out[pe] = (board, FpgaConvDevice(board.load(pe), timeout_s=TIMEOUT_S))
    return out


def _one_call(pe, info, seed=0):
    """The packets and registers of one LOAD call, and its expected output."""
    rng = np.random.default_rng(seed)
    spec = random_spec(rng, pe, 3, 4, 3, 0, True, 3 if pe == "svpe" else 16)
    rec = RecordingDevice(ReferenceDevice(info))
    run_conv(rec, random_input(rng, 1, 4, 4, 3), spec)
    regs, packets, _, data = rec.calls[0]
    return regs, packets, data


# --- bit-exactness ----------------------------------------------------------------------------
@pytest.mark.parametrize("pe", PES)
def test_random_layers_every_n_tiling_and_saturation(boards, pe):
    board, dev = boards[pe]
    rng = np.random.default_rng(21 if pe == "svpe" else 22)
    for spec, x in _random_layers(pe, dev.info, rng, 10, 14):
        want = conv_layer(x, spec)
        got = CompiledConv(spec, dev.info, max_packet_bytes=1024).run(dev, x)
        np.testing.assert_array_equal(got, want, err_msg=spec.name)
    assert dev.max_packet_bytes == (1 << 26) - WORD_BYTES  # from the DMA's c_sg_length_width


# --- the protocol of one call ----------------------------------------------------------------
def test_register_transactions_of_one_call_in_order(boards):
    board, dev = boards["svpe"]
    regs, packets, data = _one_call("svpe", dev.info)
    with board.record() as log:
        got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)
    writes = [(cell, reg, v) for op, cell, reg, v in log if op == "W"]
    names = [reg for _, reg, _ in writes]
    sends = ["MM2S_SA", "MM2S_SA_MSB", "MM2S_LENGTH"] * len(packets)
    assert names == [
        *("IN_H", "IN_W", "C_IN", "C_OUT", "FLAGS"),
        *("S2MM_DA", "S2MM_DA_MSB", "S2MM_LENGTH"),  # the receive is armed ...
        "AP_CTRL",  # ... before ap_start ...
        *sends,  # ... and before the sends
    ]
    assert [v for _, _, v in writes[:5]] == [
        regs[r] for r in ("IN_H", "IN_W", "C_IN", "C_OUT", "FLAGS")
    ]
    assert writes[7][2] == len(data) + WORD_BYTES  # feature map + the status word
    assert writes[8][2] == 1  # ap_start
    lengths = [v for _, reg, v in writes if reg == "MM2S_LENGTH"]
    assert lengths == [len(p) for p in packets]
    # after the last send: S2MM polled until idle, its LENGTH read, the kernel's
    # AP_CTRL and STATUS read - in that order
    after = [reg for op, _, reg, _ in log[log.index(("W", *writes[-1])) + 1 :] if op == "R"]
    order = [after.index(r) for r in ("S2MM_DMASR", "S2MM_LENGTH", "AP_CTRL", "STATUS")]
    assert order == sorted(order)


@pytest.mark.parametrize("pe", PES)
def test_refused_call_returns_its_status_word(boards, pe):
    board, dev = boards[pe]
    regs, packets, data = _one_call(pe, dev.info, seed=1)
    bad = {**regs, "IN_W": dev.info.max_w + 1}
    got, status = dev.call(bad, packets, len(data))  # the kernel reads nothing
    assert status == 1 and len(got) == 0  # BAD_CONFIG, from the status word
    got, status = dev.call(regs, packets, len(data))  # unread packets were dropped
    assert status == 0 and bytes(got) == bytes(data)


def test_buffers_are_pooled(boards):
    board, dev = boards["vpe"]
    regs, packets, data = _one_call("vpe", dev.info, seed=2)
    dev.call(regs, packets, len(data))
    before = board.allocations
    for _ in range(3):
        dev.call(regs, packets, len(data))
    assert board.allocations == before


# --- DDR behind a CPU cache -------------------------------------------------------------------
def test_skipping_invalidate_or_flush_gives_wrong_data(monkeypatch):
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimBuffer, SimZcu102

    board = SimZcu102(defines=SMALL["svpe"])
    dev = FpgaConvDevice(board.load("svpe"), timeout_s=TIMEOUT_S)
    regs, packets, data = _one_call("svpe", dev.info, seed=3)
    assert bytes(dev.call(regs, packets, len(data))[0]) == bytes(data)
    rolled = [*packets[:2], np.roll(packets[2], 8)]  # another input, same shape
    with monkeypatch.context() as m:
        m.setattr(SimBuffer, "invalidate", lambda self: None)
        stale, _ = dev.call(regs, rolled, len(data))
    fresh, _ = dev.call(regs, rolled, len(data))
    assert bytes(stale) == bytes(data) != bytes(fresh)  # no invalidate: the old result
    board2 = SimZcu102(defines=SMALL["svpe"])
    dev2 = FpgaConvDevice(board2.load("svpe"), timeout_s=TIMEOUT_S)
    with monkeypatch.context() as m:
        m.setattr(SimBuffer, "flush", lambda self: None)  # DDR never gets the packets
        try:
            got, status = dev2.call(regs, packets, len(data))
            assert status != 0 or bytes(got) != bytes(data)
        except KernelError:
            pass
    assert bytes(dev2.call(regs, packets, len(data))[0]) == bytes(data)


# --- faults --------------------------------------------------------------------------------
FAULTS = [
    ("decode_error", DeviceError, "decode error"),
    ("no_tlast", DeviceError, "internal error"),
    ("bad_magic", DeviceError, "not a status word"),
    ("stall", DeviceTimeout, "no TLAST-terminated packet came back"),
    ("stuck_reset", DeviceTimeout, "stayed in reset"),
]


@pytest.mark.parametrize("fault,error,message", FAULTS)
def test_injected_fault_gives_clear_error_then_next_call_works(boards, fault, error, message):
    board, dev = boards["svpe"]
    regs, packets, data = _one_call("svpe", dev.info, seed=4)
    board.inject(fault)
    t0 = time.monotonic()
    with pytest.raises(error, match=message):
        dev.call(regs, packets, len(data))
    assert time.monotonic() - t0 < 3 * TIMEOUT_S + 1.0  # its deadline (+ the reset's)
    board.clear_faults()
    got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)


def test_short_receive_buffer_and_call_during_reset(boards):
    board, dev = boards["svpe"]
    regs, packets, data = _one_call("svpe", dev.info, seed=5)
    with pytest.raises(DeviceError, match="internal error"):
        dev.call(regs, packets, len(data) - WORD_BYTES)  # the packet is longer than the buffer
    board.inject("reset_in_progress")  # the next call waits for the reset, then runs
    got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)


def test_foreign_or_wrong_bitstream_refused_at_load():
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimZcu102

    old = SimZcu102(defines=SMALL["svpe"], overrides={"HW_VERSION": 2 << 16 | 1})
    with pytest.raises(ValueError, match=r"protocol version 2\.1 .*speaks 3\.x"):
        FpgaConvDevice(old.load("svpe"), timeout_s=TIMEOUT_S)  # a 64-bit (2.x) bitstream
    swapped = SimZcu102(defines=SMALL["svpe"], overrides={"PE_KIND": 2})
    with pytest.raises(ValueError, match="nbq_svpe bitstream's kernel reports PE_KIND 'vpe'"):
        FpgaConvDevice(swapped.load("svpe"), timeout_s=TIMEOUT_S)


# --- the backend: compile once, CLI, server -----------------------------------------------------
@pytest.fixture(scope="module")
def fpga_svpe():
    from pynq_nbq.backends.fpga import FpgaBackend

    return FpgaBackend("sim", timeout_s=TIMEOUT_S)


@pytest.mark.parametrize("backend", ["fpga", "csim"])
def test_weights_are_packed_once_per_model(fpga_svpe, monkeypatch, backend):
    from pynq_nbq import api
    from pynq_nbq.backends.csim import CsimBackend

    counts = {"weights": 0, "requant": 0}
    for name, fn in (("weights", packing.pack_weights), ("requant", packing.pack_requant)):

        def counted(*a, _fn=fn, _name=name, **k):
            counts[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(packing, f"pack_{name}", counted)
    model = api.load_model("fmnist-svpe", fpga_svpe if backend == "fpga" else CsimBackend())
    ref = api.load_model("fmnist-svpe", "numpy")
    x = ref.engine.quantize_input(np.random.default_rng(0).random((2, 1, 28, 28), np.float32))
    np.testing.assert_array_equal(model.engine.run(x), ref.engine.run(x))
    first = dict(counts)
    assert first["weights"] == first["requant"] >= 1
    for _ in range(2):
        np.testing.assert_array_equal(model.engine.run(x[:1]), ref.engine.run(x[:1]))
    assert counts == first  # later inferences pack no weights


def test_bundle_of_the_other_kind_is_refused_naming_both(fpga_svpe):
    from pynq_nbq.kernel.checks import check_manifest
    from pynq_nbq.testing import conv_manifest

    info = fpga_svpe.device("svpe").info
    manifest = conv_manifest("vpe", 16, [])
    with pytest.raises(ValueError, match="datapath is 'vpe' but the kernel's PE_KIND .*'svpe'"):
        check_manifest(manifest, info)


def test_cli_classify_on_the_simulated_board(monkeypatch, capsys):
    from pynq_nbq import cli

    monkeypatch.setenv("NBQ_OVERLAY", "sim")
    assert cli.main(["classify", "--backend", "fpga", "--json"]) == 0
    fpga = capsys.readouterr().out
    assert cli.main(["classify", "--backend", "numpy", "--json"]) == 0
    numpy_out = capsys.readouterr().out

    def labels(text):
        import json

        return [(r["label"], r["confidence"]) for r in json.loads(text)["results"]]

    assert labels(fpga) == labels(numpy_out) and len(labels(fpga)) == 10
    import json

    engine = json.loads(fpga)["engine"]  # says the board is simulated, never bare "fpga"
    assert "simulated zcu102" in engine and "unmeasured on hardware" in engine


def test_server_answers_503_504_on_faults_then_serves_correctly(fpga_svpe):
    from PIL import Image

    from pynq_nbq import api
    from pynq_nbq.server import ServerConfig, create_app

    app = create_app(ServerConfig(model="fmnist-svpe", backend=fpga_svpe, power="off"))
    client = app.test_client()
    img = Image.open(api.sample_images()[3])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    png = buf.getvalue()
    want = api.load_model("fmnist-svpe", "numpy").classify([api.sample_images()[3]])
    board = fpga_svpe.board
    for fault, code in (("stall", 504), ("decode_error", 503), ("no_tlast", 503)):
        board.inject(fault)
        r = client.post("/v1/classify", data=png, content_type="application/octet-stream")
        assert r.status_code == code, (fault, r.get_json())
        assert "device" in r.get_json()["error"]
        board.clear_faults()
        r = client.post("/v1/classify", data=png, content_type="application/octet-stream")
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["label"] == want.labels[0]
        assert r.get_json()["backend"] == "fpga"


# --- imports ---------------------------------------------------------------------------------
def test_no_pynq_means_a_clear_message_and_nothing_imports_torch():
    code = (
        "import sys; sys.modules['pynq'] = None\n"
        "import pynq_nbq, pynq_nbq.api, pynq_nbq.kernel.scheduler\n"
        "from pynq_nbq.backends import get_backend\n"
        "try:\n    get_backend('fpga')\nexcept ValueError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "ERR backend 'fpga' needs the pynq library" in out.stdout, out.stderr
    code = (
        "import sys, pynq_nbq.backends.fpga, pynq_nbq.kernel.driver, pynq_nbq.sim.board\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_status_word_magic_is_what_the_board_returns(boards):
    board, dev = boards["vpe"]
    regs, packets, data = _one_call("vpe", dev.info, seed=6)
    dev.call(regs, packets, len(data))
    out = dev.pool.get("out", len(data) + WORD_BYTES)
    assert int.from_bytes(bytes(out[-WORD_BYTES:]), "little") >> 32 == STATUS_MAGIC


def test_generated_hwh_matches_the_block_design(boards):
    from pynq_nbq.kernel import design
    from pynq_nbq.kernel.protocol import PORT_NAMES, REGISTERS

    board, dev = boards["svpe"]
    ip = dev.ol.overlay.ip_dict
    for cell, (base, size) in design.ADDRESS_MAP.items():
        assert (ip[cell]["phys_addr"], ip[cell]["addr_range"]) == (base, size)
    assert ip[design.KERNEL_CELL]["type"] == design.kernel_vlnv("svpe")
    assert ip[design.DMA_CELL]["type"] == design.DMA_VLNV
    params = ip[design.DMA_CELL]["parameters"]
    assert {k: int(params[k]) for k in design.DMA_PARAMETERS} == design.DMA_PARAMETERS
    regs = ip[design.KERNEL_CELL]["registers"]
    for name, port in PORT_NAMES.items():
        assert regs[port]["address_offset"] == REGISTERS[name]


# --- a board that fails on behaviour (issue 21): drivers with one step out of place ----------
def _big_call(pe, info, relu=True, seed=7):
    """A LOAD call whose output (8x8x5 -> 41 words with the status word) is longer than
    the kernel holds while no receive is armed."""
    from pynq_nbq.sim.board import OUT_FIFO_WORDS

    rng = np.random.default_rng(seed)
    spec = random_spec(rng, pe, 3, info.max_cout, 3, 0, relu, 3 if pe == "svpe" else 16)
    rec = RecordingDevice(ReferenceDevice(info))
    run_conv(rec, random_input(rng, 1, 8, info.max_w, 3), spec)
    regs, packets, _, data = rec.calls[0]
    assert len(rec.calls) == 1 and len(data) // WORD_BYTES + 1 > OUT_FIFO_WORDS
    return regs, packets, data


def _misordered_call(dev, regs, packets, out_nbytes, mistake):
    """One call from the driver's own parts with ``mistake``: "receive_after_sends" (each
    send waited for, the receive armed last) or "registers_after_start"."""
    from pynq_nbq.kernel import axi_dma as A
    from pynq_nbq.kernel.protocol import STATUS_WORDS, split_output

    deadline = time.monotonic() + TIMEOUT_S
    dev._make_ready(deadline)
    recv = out_nbytes + STATUS_WORDS * WORD_BYTES
    out = dev.pool.get("out", recv)
    bufs = []
    for i, p in enumerate(packets):
        buf = dev.pool.get(f"in{i}", len(p))
        buf[:] = p
        bufs.append(buf)
    try:
        if mistake == "registers_after_start":
            dev.dma.recvchannel.transfer(out, nbytes=recv)
            dev.ip.start()
            dev.ip.write_call_registers(regs)  # too late: the kernel sampled them at start
        else:
            dev.ip.write_call_registers(regs)
            dev.ip.start()
        for buf in bufs:
            dev.dma.sendchannel.transfer(buf, nbytes=len(buf))
            while mistake == "receive_after_sends" and not dev._dmasr(A.MM2S) & A.Status.IDLE:
                if time.monotonic() > deadline:  # a send the kernel cannot finish
                    raise DeviceTimeout("the kernel did not take a packet (MM2S not idle)")
        if mistake == "receive_after_sends":
            dev.dma.recvchannel.transfer(out, nbytes=recv)
        dev._wait_receive(deadline)
        dev.dma.recvchannel.wait()
        n = int(dev.dma.recvchannel.transferred)
        return split_output(out[:n], out_nbytes, dev.ip.read_register("STATUS"))
    except Exception:
        dev._recover()
        raise


def test_receive_armed_after_the_sends_stalls_on_back_pressure(boards):
    """The kernel's output cannot drain, so it stops taking the feature map: the send
    never completes and the call times out - timing goes wrong, no order assert needed.
    The right order (receive armed before ap_start) runs the same call."""
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimZcu102

    board = SimZcu102(defines=SMALL["svpe"])  # its own board: this one gets stuck
    dev = FpgaConvDevice(board.load("svpe"), timeout_s=TIMEOUT_S)
    regs, packets, data = _big_call("svpe", dev.info)
    with pytest.raises(DeviceTimeout, match="did not take a packet"):
        _misordered_call(dev, regs, packets, len(data), "receive_after_sends")
    # the DMA was reset and the feature map dropped: the kernel still waits for it
    with pytest.raises(DeviceTimeout, match="still busy"):
        dev.call(regs, packets, len(data))
    dev = FpgaConvDevice(board.load("svpe"), timeout_s=TIMEOUT_S)  # reload the overlay
    got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)
    # a call whose output fits what the kernel holds goes through even so, as on a board
    small_regs, small_packets, small_data = _one_call("svpe", dev.info, seed=8)
    got, status = _misordered_call(
        dev, small_regs, small_packets, len(small_data), "receive_after_sends"
    )
    assert status == 0 and bytes(got) == bytes(small_data)


def test_registers_written_after_ap_start_give_the_previous_calls_result(boards):
    """Registers are sampled at ap_start: written after it, they do not reach this call,
    which runs with the previous call's FLAGS (no ReLU) - the data is wrong."""
    from pynq_nbq.kernel.protocol import Flag

    board, dev = boards["vpe"]
    regs, packets, data = _big_call("vpe", dev.info, relu=True, seed=9)
    plain = {**regs, "FLAGS": regs["FLAGS"] & ~Flag.RELU}
    n = len(data)
    want_plain, _ = ReferenceDevice(dev.info).call(plain, packets, n)
    want_relu, _ = ReferenceDevice(dev.info).call(regs, packets, n)
    assert bytes(want_plain) != bytes(want_relu)  # some outputs are negative
    got, status = dev.call(plain, packets, n)  # the previous call: no ReLU
    assert status == 0 and bytes(got) == bytes(want_plain)
    got, status = _misordered_call(dev, regs, packets, n, "registers_after_start")
    assert status == 0 and bytes(got) == bytes(want_plain) != bytes(want_relu)
    got, status = dev.call(regs, packets, n)  # in order: the ReLU call's own result
    assert status == 0 and bytes(got) == bytes(want_relu)


def test_dma_length_registers_keep_26_bits(boards):
    from pynq_nbq.kernel import axi_dma as A
    from pynq_nbq.kernel import design

    board, dev = boards["svpe"]
    base = design.ADDRESS_MAP[design.DMA_CELL][0]
    regs, packets, data = _one_call("svpe", dev.info, seed=10)
    dev.call(regs, packets, len(data))  # channels running and idle
    recv = len(data) + WORD_BYTES
    out = dev.pool.get("out", recv)
    addr = int(out.device_address)
    board.write_registers(base + A.S2MM + A.ADDR, (addr & 0xFFFF_FFFF).to_bytes(4, "little"))
    board.write_registers(base + A.S2MM + A.ADDR_MSB, (addr >> 32).to_bytes(4, "little"))
    board.write_registers(base + A.S2MM + A.LENGTH, ((1 << 26) | recv).to_bytes(4, "little"))
    raw = board.read_registers(base + A.S2MM + A.LENGTH, 4)
    assert int.from_bytes(raw, "little") == recv  # bit 26 is not part of the register
    dev._recover()


# --- every board's block design (issue 26) ------------------------------------------------
OTHER_BOARDS = ("zcu104", "kv260", "pynq-z2")


@pytest.mark.parametrize("board", ("zcu102",) + OTHER_BOARDS)
def test_shipped_bundles_bit_exact_on_each_boards_design(board):
    """A few images of both shipped bundles through the fpga backend on the board's own
    block design (its .hwh, register windows, DMA address width) and the board's own
    kernel builds (kernel/builds.py: Pm, Pn, buffer maxima, the 3-bit svpe kernel): the
    numpy result."""
    from pynq_nbq import api
    from pynq_nbq.backends.fpga import FpgaBackend
    from pynq_nbq.kernel import builds, design

    backend = FpgaBackend(f"sim:{board}", timeout_s=TIMEOUT_S)
    x = np.random.default_rng(26).random((2, 1, 28, 28), np.float32)
    for name in ("fmnist-svpe", "fmnist-vpe"):
        ref = api.load_model(name, "numpy")
        q = ref.engine.quantize_input(x)
        got = api.load_model(name, backend).engine.run(q)
        np.testing.assert_array_equal(got, ref.engine.run(q), err_msg=f"{name} on {board}")
    ip = backend.device("vpe").ol.overlay.ip_dict
    spans = {c: (ip[c]["phys_addr"], ip[c]["addr_range"]) for c in design.address_map(board)}
    assert spans == design.address_map(board)
    assert backend.device("vpe").addr_bits == design.target(board).ps.addr_bits
    assert f"simulated {board}" in backend.description
    for kind in ("svpe", "vpe"):
        assert backend.device(kind).info == builds.build(board, kind).info, kind


def _msb_writes(log):
    return [(reg, v) for op, _, reg, v in log if op == "W" and reg.endswith("_MSB")]


@pytest.mark.parametrize(
    "board,ddr_base", [("zcu102", HIGH_DDR), ("kv260", HIGH_DDR), ("pynq-z2", 0x1000_0000)]
)
def test_dma_addresses_as_wide_as_the_boards_dma(board, ddr_base):
    """64-bit DMA (PS8): both halves of every address, the high half non-zero for buffers
    above 4 GiB (dropping it would miss DDR); 32-bit DMA (PS7, PG021: no MSB registers):
    no write to 0x1C/0x4C at all."""
    from pynq_nbq.kernel import design
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimBoard

    sim = SimBoard(board, defines=SMALL["svpe"], ddr_base=ddr_base)
    dev = FpgaConvDevice(sim.load("svpe"), timeout_s=TIMEOUT_S)
    assert dev.addr_bits == sim.dma_addr_bits == design.target(board).ps.addr_bits
    regs, packets, data = _one_call("svpe", dev.info, seed=11)
    with sim.record() as log:
        got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)
    names = [reg for op, _, reg, _ in log if op == "W"]
    if dev.addr_bits == 64:
        highs = _msb_writes(log)
        assert [r for r, _ in highs] == ["S2MM_DA_MSB"] + ["MM2S_SA_MSB"] * len(packets)
        assert all(v == ddr_base >> 32 for _, v in highs)
    else:
        assert not _msb_writes(log) and sim.reserved_writes == 0
        assert names.count("MM2S_SA") == len(packets) and names.count("S2MM_DA") == 1


def test_32_bit_dma_refuses_a_buffer_above_4_gib():
    """A buffer the 32-bit DMA cannot address is refused naming the width, not sent to
    the wrong address; nothing was started, so the next call on reachable buffers works."""
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimBoard

    sim = SimBoard("pynq-z2", defines=SMALL["svpe"])
    dev = FpgaConvDevice(sim.load("svpe"), timeout_s=TIMEOUT_S)  # PROBE: low buffers
    regs, packets, data = _one_call("svpe", dev.info, seed=12)
    sim._next_addr = HIGH_DDR  # the next buffers land above 4 GiB
    with pytest.raises(DeviceError, match="32-bit AXI DMA"):
        dev.call(regs, packets, len(data))
    assert sim.kernel_runs == 1  # the PROBE only
    dev.pool.close()
    sim._next_addr = 0x1800_0000  # back in the PYNQ-Z2's 512 MiB
    got, status = dev.call(regs, packets, len(data))
    assert status == 0 and bytes(got) == bytes(data)


def test_kind_defines_build_each_kind_of_a_board_apart():
    """A board's kernel builds per PE kind (issue 26: sized per board): the svpe kernel
    of this PYNQ-Z2 is the small build, its vpe kernel today's default."""
    from pynq_nbq.kernel.driver import FpgaConvDevice
    from pynq_nbq.sim.board import SimBoard

    sim = SimBoard("pynq-z2", kind_defines={"svpe": SMALL["svpe"]})
    svpe = FpgaConvDevice(sim.load("svpe"), timeout_s=TIMEOUT_S).info
    d = SMALL["svpe"]
    assert (svpe.pm, svpe.pn, svpe.max_w) == (d["NBQ_PM"], d["NBQ_PN"], d["NBQ_MAX_W"])
    vpe = FpgaConvDevice(sim.load("vpe"), timeout_s=TIMEOUT_S).info
    assert vpe.max_w > d["NBQ_MAX_W"]  # not the small build
