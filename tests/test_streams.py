"""The conv engine's register map and stream protocol (pynq_nbq.streams), without C++.

* the Python constants equal hls/nbq_params.h's (parsed), and the kernel's interface
  pragmas bind each port to its documented register;
* word packing round-trips and has the documented byte layout;
* the tile planner covers every output exactly once within every limit;
* the scheduler + a numpy model of one kernel call equals ops.conv_layer;
* refusals (PE kind, sizes, foreign IP, bad calls) carry clear messages.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynq_nbq import datapath as dp
from pynq_nbq import streams as S
from pynq_nbq.kernel import protocol
from pynq_nbq.ops import ConvSpec, conv_layer
from pynq_nbq.testing import conv_manifest, random_bundle

sys.path.insert(0, str(S.HLS_DIR))
from gen_vectors import random_input, random_spec  # noqa: E402

HEADER = S.parse_params_header()


# --- the contract with the C++ side ---------------------------------------------------
def test_register_offsets_match_header():
    for name, off in S.REGISTERS.items():
        assert HEADER[f"NBQ_REG_{name}"] == off, name
    header_regs = {k[len("NBQ_REG_") :] for k in HEADER if k.startswith("NBQ_REG_")}
    assert header_regs == set(S.REGISTERS)


def test_register_table_in_docs_matches_the_protocol():
    """docs/datapath.md's register table names every register at its offset, no others,
    and states the protocol version the package speaks."""
    doc = (S.HLS_DIR.parent / "docs" / "datapath.md").read_text()
    table = doc.split("### Registers", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    documented = {}
    for row in table.splitlines()[2:]:
        offsets, names = (cell.strip() for cell in row.split("|")[1:3])
        for off, name in zip(offsets.split(", "), names.split(", "), strict=True):
            documented[name] = int(off, 16)
    assert documented == S.REGISTERS
    version = f"now {protocol.VERSION_MAJOR}.{protocol.VERSION_MINOR}"
    assert version in table, version


def test_register_map_is_well_formed():
    user = [S.REGISTERS[r] for r in (*S.WRITE_REGISTERS, *S.READ_REGISTERS)]
    assert user == sorted(user), "WRITE then READ registers, in offset order"
    assert all(off % 8 == 0 and off >= 0x10 for off in user)  # data + reserved/ap_vld word
    assert len(set(user)) == len(user)


def test_flags_status_and_identity_match_header():
    for f in S.Flag:
        assert HEADER[f"NBQ_FLAG_{f.name}"] == f.value
    assert HEADER["NBQ_FLAG_ALL"] == S.FLAG_ALL == int(sum(S.Flag))
    for s in S.Status:
        assert HEADER[f"NBQ_STATUS_{s.name}"] == s.value
    assert HEADER["NBQ_ID"] == S.KERNEL_ID
    assert HEADER["NBQ_VERSION"] == S.VERSION
    assert HEADER["NBQ_VERSION_MAJOR"] == S.VERSION_MAJOR == 3
    assert HEADER["NBQ_STATUS_MAGIC"] == S.STATUS_MAGIC == int.from_bytes(b"NBQS", "big")
    assert HEADER["NBQ_STATUS_WORDS"] == S.STATUS_WORDS
    assert HEADER["NBQ_PE_SVPE"] == S.PE_KINDS["svpe"]
    assert HEADER["NBQ_PE_VPE"] == S.PE_KINDS["vpe"]
    assert HEADER["NBQ_WORD_BITS"] == S.WORD_BITS
    assert HEADER["NBQ_ACT_LANES"] == S.ACT_LANES
    assert HEADER["NBQ_SVPE_LANES"] == S.SVPE_LANES
    assert HEADER["NBQ_VPE_LANES"] == S.VPE_LANES
    assert HEADER["NBQ_WORD_BYTES"] == S.WORD_BYTES
    assert HEADER["NBQ_REQ_WORDS"] == S.REQUANT_WORDS


def test_stream_width_and_burst_have_one_source_design_py():
    """nbq_params.h, protocol.py and the block design all take design.py's widths."""
    from pynq_nbq.kernel import design

    assert design.STREAM_BITS == S.WORD_BITS == HEADER["NBQ_WORD_BITS"] == 128
    assert HEADER["NBQ_DMA_BURST_BEATS"] == design.DMA_BURST_BEATS
    dma = design.DMA_PARAMETERS
    for key in (
        "c_m_axi_mm2s_data_width",
        "c_m_axis_mm2s_tdata_width",
        "c_m_axi_s2mm_data_width",
        "c_s_axis_s2mm_tdata_width",
    ):
        assert dma[key] == design.STREAM_BITS, key
    assert dma["c_mm2s_burst_size"] == dma["c_s2mm_burst_size"] == design.DMA_BURST_BEATS
    assert design.PS_PARAMETERS["PSU__SAXIGP2__DATA_WIDTH"] == design.HP_PORT_BITS
    assert design.HP_PORT_BITS >= design.STREAM_BITS  # no narrowing on the way to DDR
    assert HEADER["NBQ_CODE_MAG_BITS"] == S.CODE_MAG_BITS
    assert HEADER["NBQ_ACC_BITS"] == dp.ACC_BITS
    assert HEADER["NBQ_ACT_BITS"] == dp.ACT_BITS
    assert HEADER["NBQ_REQ_BITS"] == dp.REQUANT_BITS


def test_kernel_pragmas_bind_ports_to_registers():
    src = (S.HLS_DIR / "nbq_conv.cpp").read_text()
    found = dict(re.findall(r"s_axilite port=(\w+) offset=NBQ_REG_(\w+) bundle=ctrl", src))
    assert found == {S.PORT_NAMES[r]: r for r in (*S.WRITE_REGISTERS, *S.READ_REGISTERS)}
    assert "mode=ap_ctrl_hs port=return" in src
    assert "mode=axis port=s_in" in src and "mode=axis port=s_out" in src


def test_check_vitis_header():
    lines = [
        f"#define XNBQ_CONV_CTRL_ADDR_{S.PORT_NAMES[r].upper()}_DATA 0x{S.REGISTERS[r]:x}"
        for r in (*S.WRITE_REGISTERS, *S.READ_REGISTERS)
    ]
    good = "#define XNBQ_CONV_CTRL_ADDR_AP_CTRL 0x00\n" + "\n".join(lines)
    assert S.check_vitis_header(good) == []
    bad = good.replace("XNBQ_CONV_CTRL_ADDR_PM_DATA 0x58", "XNBQ_CONV_CTRL_ADDR_PM_DATA 0x5c")
    assert S.check_vitis_header(bad) == ["PM: Vitis put it at 0x5c, pynq_nbq expects 0x58"]


def test_check_header_command_fails_on_a_misplaced_register(tmp_path, capsys):
    """``python3 -m pynq_nbq.kernel check-header``: exit 1 when a register moved (it used
    to print the problem and exit 0), 0 when every register is where the host expects."""
    from pynq_nbq.kernel.header import main

    lines = [
        f"#define XNBQ_CONV_CTRL_ADDR_{S.PORT_NAMES[r].upper()}_DATA 0x{S.REGISTERS[r]:x}"
        for r in (*S.WRITE_REGISTERS, *S.READ_REGISTERS)
    ]
    good = tmp_path / "good.h"
    good.write_text("\n".join(lines))
    bad = tmp_path / "bad.h"
    bad.write_text(good.read_text().replace("PM_DATA 0x58", "PM_DATA 0x5c"))
    assert main(["check-header", str(good)]) == 0
    assert main(["check-header", str(bad)]) == 1
    assert "PM: Vitis put it at 0x5c" in capsys.readouterr().out


# --- packing --------------------------------------------------------------------------
def test_activation_layout_is_little_endian_lanes_with_zero_padding():
    items = [1, -2, 3, 0x1234, -32768, 5, 6, 7, -1]
    buf = S.pack_activations(np.array(items, dtype=np.int16))
    assert len(buf) == 32  # 9 items -> 2 words of 8 lanes, the second zero-padded
    halves = struct.unpack("<4Q", bytes(buf))
    assert halves[0] == 0x1234_0003_FFFE_0001  # lanes 0..3 in bits 63..0 of word 0
    assert halves[1] == 0x0007_0006_0005_8000  # lanes 4..7 in bits 127..64
    assert halves[2:] == (0xFFFF, 0)
    assert S.unpack_activations(buf, 9).tolist() == items


def test_svpe_code_bytes():
    codes = np.arange(-15, 16, dtype=np.int8)
    b = S.encode_svpe_codes(codes)
    assert b[codes.tolist().index(-3)] == 0x13 and b[codes.tolist().index(5)] == 0x05
    assert S.decode_svpe_bytes(b).tolist() == codes.tolist()
    with pytest.raises(ValueError, match="4-bit field"):
        S.encode_svpe_codes(np.array([16]))
    # the kernel's 4-bit magnitude field holds exactly the widest svpe code
    assert S.MAX_CODE_MAG == dp.max_code(dp.SVPE_MAX_BITS)
    w = dp.decode_svpe(codes, dp.SVPE_MAX_BITS)
    assert dp.encode_svpe(w).tolist() == codes.tolist()


def test_weight_packets_round_trip():
    rng = np.random.default_rng(0)
    codes = rng.integers(-15, 16, (5, 3, 3, 3)).astype(np.int8)
    for pm in (1, 2, 4, 16, 32):
        buf = S.pack_weights(codes, "svpe", pm)
        vec_words = -(-pm // 16)  # one byte a lane, 16 a word
        assert len(buf) == 5 * -(-3 // pm) * 9 * vec_words * S.WORD_BYTES
        assert len(buf) == 5 * S.KernelInfo("svpe", pm, 1, 9, 9, 9, 9).weight_bytes_per_cout(3, 3)
        got = S.unpack_weights(buf, codes.shape, "svpe", pm)
        assert np.array_equal(got, dp.decode_svpe(codes, 5)), pm
    w = rng.integers(-(1 << 15), 1 << 15, (2, 3, 1, 1))
    for pm in (2, 4, 16):
        buf = S.pack_weights(w, "vpe", pm)
        assert np.array_equal(S.unpack_weights(buf, w.shape, "vpe", pm), w)
    with pytest.raises(ValueError, match="int16"):
        S.pack_weights(np.full((1, 1, 1, 1), 1 << 15), "vpe", 4)


def test_weight_packet_is_in_the_kernels_order():
    """Protocol 3.0: per output channel, per input group of Pm, per tap, Pm lanes."""
    codes = np.arange(2 * 3 * 9).reshape(2, 3, 3, 3) % 15 + 1  # distinct-ish, all > 0
    buf = S.pack_weights(codes, "svpe", 2)  # groups of 2 input channels: {0, 1}, {2, pad}
    vec = buf.reshape(-1, S.WORD_BYTES)  # one vector of 2 lanes a word
    assert len(vec) == 2 * 2 * 9
    # output channel 0, group 0, tap 4 (centre): lanes = input channels 0 and 1
    assert vec[4][:2].tolist() == [codes[0, 0, 1, 1], codes[0, 1, 1, 1]]
    # output channel 0, group 1, tap 0: input channel 2, then a zero lane (past C_in)
    assert vec[9][:2].tolist() == [codes[0, 2, 0, 0], 0]
    assert not vec[:, 2:].any()  # the rest of each word is padding


def test_requant_packet_round_trip_at_the_limits():
    mult = np.array([-(1 << 15), (1 << 15) - 1, 0, -1])
    bias = np.array([-(1 << 63), (1 << 63) - 1, 0, -5])
    shift = np.array([0, 62, 1, 31])
    buf = S.pack_requant(mult, bias, shift)
    assert len(buf) == 4 * S.WORD_BYTES  # one 128-bit word a channel
    w = struct.unpack("<8Q", bytes(buf))
    assert w[2] == (1 << 63) - 1 and w[3] == 0x7FFF | 62 << 16
    for a, b in zip(S.unpack_requant(buf, 4), (mult, bias, shift), strict=True):
        assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match="shift"):
        S.pack_requant(np.array([1]), np.array([0]), np.array([63]))


# --- tiling ---------------------------------------------------------------------------
INFO = S.KernelInfo("svpe", pm=4, pn=2, max_h=9, max_w=7, max_cin=16, max_cout=5)


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    c_in=st.integers(1, 16),
    c_out=st.integers(1, 13),
    kernel=st.sampled_from([1, 3]),
    pool=st.sampled_from([0, 2]),
    max_packet=st.sampled_from([S.DEFAULT_MAX_PACKET_BYTES, 512, 200]),
)
def test_tiles_cover_the_output_once_within_limits(h, w, c_in, c_out, kernel, pool, max_packet):
    try:
        plan = S.plan_layer(h, w, c_in, c_out, kernel, pool, INFO, max_packet)
    except ValueError as exc:
        assert "no tile fits" in str(exc) or "exceed" in str(exc)
        assert max_packet < 1024
        return
    step = 2 if pool else 1
    assert (plan.out_h, plan.out_w) == ((h // step), (w // step))
    seen = np.zeros((plan.out_h, plan.out_w), int)
    for t in plan.tiles:
        seen[t.out_rows[0] : t.out_rows[1], t.out_cols[0] : t.out_cols[1]] += 1
        in_h, in_w = t.in_rows[1] - t.in_rows[0], t.in_cols[1] - t.in_cols[0]
        assert in_h <= INFO.max_h and in_w <= INFO.max_w
        assert 2 * in_h * in_w * c_in <= max_packet
        assert t.conv_rows[0] % step == 0 and t.conv_cols[0] % step == 0
        # the padded tile yields exactly the conv outputs the tile claims
        p = (kernel - 1) // 2
        assert in_h + t.pads[0] + t.pads[1] - kernel + 1 == t.conv_rows[1] - t.conv_rows[0]
        assert in_w + t.pads[2] + t.pads[3] - kernel + 1 == t.conv_cols[1] - t.conv_cols[0]
        assert not any(t.pads) or p == 1
    assert (seen == 1).all()
    covered = [c for g in plan.groups for c in range(*g)]
    assert covered == list(range(c_out))
    assert all(b - a <= INFO.max_cout for a, b in plan.groups)


def test_input_channels_over_the_limit_are_refused():
    with pytest.raises(ValueError, match="MAX_CIN 16"):
        S.plan_layer(4, 4, 17, 2, 3, 0, INFO)


# --- the scheduler against the numpy model of the kernel ------------------------------
def _layers(pe):
    rng = np.random.default_rng(7 if pe == "svpe" else 8)
    bits = (1, 2, 3, 4, 5) if pe == "svpe" else (16, 16, 16)
    for i, n in enumerate(bits * 2):
        k, pool = (3, 1)[i % 2], 2 * (i // 2 % 2)
        cin, cout = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        h, w = int(rng.integers(1, 19)), int(rng.integers(1, 19))
        spec = random_spec(rng, pe, cin, cout, k, pool, bool(i % 3), n, edge=i % 4 == 3)
        yield spec, random_input(rng, 2, h, w, cin, edge=i % 2 == 1)


@pytest.mark.parametrize("pe", ["svpe", "vpe"])
@pytest.mark.parametrize("max_packet", [S.DEFAULT_MAX_PACKET_BYTES, 512])
def test_scheduler_with_reference_device_equals_conv_layer(pe, max_packet):
    info = S.KernelInfo(pe, pm=4, pn=2, max_h=9, max_w=7, max_cin=16, max_cout=5)
    for spec, x in _layers(pe):
        got = S.run_conv(S.ReferenceDevice(info), x, spec, max_packet)
        assert np.array_equal(got, conv_layer(x, spec)), spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), pe=st.sampled_from(["svpe", "vpe"]))
def test_scheduler_property(seed, pe):
    rng = np.random.default_rng(seed)
    info = S.KernelInfo(
        pe, 3, 2, int(rng.integers(4, 10)), int(rng.integers(4, 10)), 12, int(rng.integers(1, 7))
    )
    k, pool = int(rng.choice([1, 3])), int(rng.choice([0, 2]))
    n_bits = int(rng.integers(1, 6)) if pe == "svpe" else 16
    spec = random_spec(
        rng,
        pe,
        int(rng.integers(1, 13)),
        int(rng.integers(1, 10)),
        k,
        pool,
        bool(rng.integers(2)),
        n_bits,
        edge=bool(rng.integers(2)),
    )
    x = random_input(
        rng,
        1,
        int(rng.integers(1, 15)),
        int(rng.integers(1, 15)),
        spec.in_channels,
        edge=bool(rng.integers(2)),
    )
    got = S.run_conv(S.ReferenceDevice(info), x, spec, int(rng.choice([1 << 20, 800])))
    assert np.array_equal(got, conv_layer(x, spec))


def test_weights_load_once_per_output_group():
    rec = S.RecordingDevice(S.ReferenceDevice(INFO))
    spec = random_spec(np.random.default_rng(1), "svpe", 3, 12, 3, 2, True, 3)
    x = random_input(np.random.default_rng(2), 2, 12, 12, 3)
    S.run_conv(rec, x, spec)
    plan = S.plan_layer(12, 12, 3, 12, 3, 2, INFO)
    loads = [c for c in rec.calls if c[0]["FLAGS"] & S.Flag.LOAD]
    assert len(loads) == len(plan.groups) == 3
    assert len(rec.calls) == len(plan.groups) * 2 * len(plan.tiles)
    assert all(len(c[1]) == (3 if c[0]["FLAGS"] & S.Flag.LOAD else 1) for c in rec.calls)


# --- refusals and messages ------------------------------------------------------------
def _manifest(datapath="svpe", cin=8, acc_bits=30, kernel=3, padding=1, bits=3):
    return conv_manifest(datapath, bits, [("c1", cin, kernel, padding, acc_bits)])


def test_check_manifest():
    S.check_manifest(_manifest(), INFO)
    with pytest.raises(ValueError, match="datapath is 'vpe' but the kernel's PE_KIND .* 'svpe'"):
        S.check_manifest(_manifest("vpe"), INFO)
    with pytest.raises(ValueError, match="17 input channels > MAX_CIN 16"):
        S.check_manifest(_manifest(cin=17), INFO)
    with pytest.raises(ValueError, match="acc_bits 50 > ACC_BITS 48"):
        S.check_manifest(_manifest(acc_bits=50), INFO)
    S.check_manifest(_manifest(cin=99, kernel=5, padding=2), INFO)  # runs on the ARM cores
    with pytest.raises(ValueError) as e:
        S.check_manifest(_manifest("vpe", cin=17), INFO)
    assert "PE_KIND" in str(e.value) and "MAX_CIN" in str(e.value)
    with pytest.raises(ValueError, match="svpe needs n in"):
        S.check_manifest(_manifest(bits=6), INFO)


def test_check_manifest_reads_a_validated_bundle(tmp_path):
    """A real bundle's typed manifest: conv1x1/3x3 layers checked, the rest skipped."""
    spec = random_bundle(tmp_path / "b", "svpe", 3, width=12).spec
    assert any(layer.on_conv_engine for layer in spec.layers)
    S.check_manifest(spec, INFO)
    narrow = dataclasses.replace(INFO, max_cin=11)
    with pytest.raises(ValueError, match="12 input channels > MAX_CIN 11"):
        S.check_manifest(spec, narrow)
    need = max(layer.acc_bits for layer in spec.layers if layer.on_conv_engine)
    with pytest.raises(ValueError, match=f"acc_bits {need} > ACC_BITS {need - 1}"):
        S.check_manifest(spec, dataclasses.replace(INFO, acc_bits=need - 1))
    with pytest.raises(ValueError, match="PE_KIND register says 'svpe'"):
        S.check_manifest(random_bundle(tmp_path / "v", "vpe").spec, INFO)


def test_conv_weights_for_refuses_what_the_kernel_cannot_run():
    rng = np.random.default_rng(0)
    spec = random_spec(rng, "svpe", 3, 2, 3)
    assert S.conv_weights_for(spec, INFO).dtype == np.int8
    vpe = random_spec(rng, "vpe", 3, 2, 3)
    with pytest.raises(ValueError, match="is vpe but the kernel's PE_KIND register says svpe"):
        S.conv_weights_for(vpe, INFO)
    strided = ConvSpec("s", spec.weights, spec.mult, spec.bias, spec.shift, stride=2, padding=1)
    with pytest.raises(ValueError, match="stride 2"):
        S.conv_weights_for(strided, INFO)
    wide = random_spec(rng, "svpe", 17, 2, 1)
    with pytest.raises(ValueError, match="MAX_CIN register allows 16"):
        S.conv_weights_for(wide, INFO)
    big = S.KernelInfo("vpe", 4, 2, 9, 7, 1 << 20, 5, acc_bits=40)
    with pytest.raises(ValueError, match="accumulator needs 44 bits > 40"):
        S.conv_weights_for(random_spec(rng, "vpe", 512, 1, 3, edge=True), big)


def test_kernel_info_refuses_foreign_or_newer_ip():
    regs = INFO.registers()
    assert S.KernelInfo.from_registers(regs) == INFO
    with pytest.raises(ValueError, match="not an nbq_conv kernel"):
        S.KernelInfo.from_registers({**regs, "HW_ID": 0xDEADBEEF})
    with pytest.raises(ValueError, match="protocol version 4.0"):
        S.KernelInfo.from_registers({**regs, "HW_VERSION": 4 << 16})
    with pytest.raises(ValueError, match=r"protocol version 2.1 .* \(speaks 3.x\)"):
        S.KernelInfo.from_registers({**regs, "HW_VERSION": 2 << 16 | 1})  # a 64-bit kernel
    with pytest.raises(ValueError, match="stream width 64 bits, expected 128"):
        S.KernelInfo.from_registers({**regs, "WORD_BITS": 64})
    with pytest.raises(ValueError, match="PE_KIND"):
        S.KernelInfo.from_registers({**regs, "PE_KIND": 7})


def test_reference_device_status_codes():
    dev = S.ReferenceDevice(INFO)
    regs = {"IN_H": 4, "IN_W": 8, "C_IN": 1, "C_OUT": 1, "FLAGS": int(S.Flag.K3 | S.Flag.LOAD)}
    assert dev.call(regs, [], 0)[1] == S.Status.BAD_CONFIG  # IN_W over MAX_W
    assert dev.call({**regs, "IN_W": 4, "FLAGS": 1 << 12}, [], 0)[1] == S.Status.BAD_CONFIG
    assert dev.call({**regs, "IN_W": 4, "FLAGS": int(S.Flag.PAD_TOP)}, [], 0)[1] == (
        S.Status.BAD_CONFIG  # padding on a 1x1 layer
    )
    assert dev.call({**regs, "IN_W": 4, "FLAGS": int(S.Flag.K3)}, [], 0)[1] == S.Status.NO_WEIGHTS
    assert "NO_WEIGHTS" in S.describe_status(S.Status.NO_WEIGHTS)
    assert S.describe_status(0) == "ok"


def test_vector_file_header(tmp_path):
    rec = S.RecordingDevice(S.ReferenceDevice(INFO))
    spec = random_spec(np.random.default_rng(1), "svpe", 2, 3, 3)
    S.run_conv(rec, random_input(np.random.default_rng(2), 1, 4, 4, 2), spec)
    S.write_vectors(tmp_path / "v.bin", INFO, rec.calls)
    raw = (tmp_path / "v.bin").read_bytes()
    assert raw[:4] == b"NBQV"
    assert struct.unpack("<9I", raw[4:40]) == (3, 1, 4, 2, 9, 7, 16, 5, len(rec.calls))
    # the first call's expected output packet ends with its status word
    regs, packets, status, data = rec.calls[0]
    at = 40 + 24 + sum(4 + len(p) for p in packets)
    st, words = struct.unpack("<II", raw[at : at + 8])
    assert (st, words) == (0, len(data) // S.WORD_BYTES + 1)
    packet = raw[at + 8 : at + 8 + S.WORD_BYTES * words]
    assert packet[: -S.WORD_BYTES] == bytes(data)
    assert packet[-S.WORD_BYTES :] == b"\0\0\0\0SQBN" + bytes(8)


def test_status_word_layout_and_split_output():
    # 0x4E425153 little-endian in bits 63..32, bits 127..64 zero
    assert bytes(S.status_word(0)) == bytes(4) + b"SQBN" + bytes(8)
    w = S.status_word(S.Status.TLAST_EARLY | S.Status.TLAST_MISSING)
    assert int.from_bytes(bytes(w), "little") == 0x4E425153_0000000C
    fm = np.arange(32, dtype=np.uint8)
    got, status = S.split_output(np.concatenate([fm, S.status_word(0)]), 32)
    assert status == 0 and bytes(got) == bytes(fm)
    for refused in (S.Status.BAD_CONFIG, S.Status.NO_WEIGHTS):  # the status word alone
        got, status = S.split_output(S.status_word(refused), 32, status_register=int(refused))
        assert status == refused and len(got) == 0
    # a call that ran with a TLAST fault still sends its feature map
    got, status = S.split_output(np.concatenate([fm, S.status_word(4)]), 32)
    assert status == 4 and len(got) == 0
    with pytest.raises(S.KernelError, match="not a status word .*0x4e425153"):
        S.split_output(np.concatenate([fm, fm[:16]]), 16)
    high = S.status_word(0).copy()
    high[8] = 1  # a set bit above the magic: a 64-bit kernel's word read as 128 bits
    with pytest.raises(S.KernelError, match="not a status word"):
        S.split_output(np.concatenate([fm, high]), 32)
    with pytest.raises(S.KernelError, match="received 16 bytes .* expected 48"):
        S.split_output(S.status_word(0), 32)
    with pytest.raises(S.KernelError, match="received 48 bytes .*BAD_CONFIG.* expected 16"):
        S.split_output(np.concatenate([fm, S.status_word(1)]), 32)
    with pytest.raises(S.KernelError, match="whole 16-byte words"):
        S.split_output(np.zeros(8, np.uint8), 0)
    with pytest.raises(S.KernelError, match="STATUS register reads 0x2"):
        S.split_output(S.status_word(1), 0, status_register=2)


def test_weight_bits_register():
    """Every 3.x kernel reports WEIGHT_BITS (a 3-bit svpe build: 3)."""
    regs = INFO.registers()
    assert S.KernelInfo.from_registers(regs).weight_bits == INFO.weight_bits
    narrow = dict(regs, WEIGHT_BITS=3)
    assert S.KernelInfo.from_registers(narrow).weight_bits == 3
