"""The HLS kernel as a g++ C-simulation (backend ``csim``) against the numpy engine.

Four library builds, compiled once per cache (``~/.cache/pynq_nbq/csim`` or
``$NBQ_CACHE_DIR``) and in parallel: the default svpe and vpe kernels, and a small
build of each (tiny buffers, odd Pm/Pn) on which ordinary layers need tiling.  Every
layer goes through the real protocol: packed words, TLAST, registers, STATUS.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pynq_nbq import streams as S
from pynq_nbq.backends import csim
from pynq_nbq.ops import conv_layer
from pynq_nbq.testing import conv_manifest

sys.path.insert(0, str(S.HLS_DIR))
import gen_vectors  # noqa: E402
from gen_vectors import random_input, random_spec  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None
    or importlib.util.find_spec("hls4ml") is None,
    reason="the csim backend needs g++ and the hls4ml wheel's ap_int headers",
)

PES = ("svpe", "vpe")
#: Small buffers and odd parallelism: MAX_W 8, MAX_COUT 5 force tiling of small layers.
SMALL = {
    "svpe": {
        "NBQ_MAX_W": 8,
        "NBQ_MAX_H": 12,
        "NBQ_MAX_CIN": 20,
        "NBQ_MAX_COUT": 5,
        "NBQ_PM": 4,
        "NBQ_PN": 3,
    },
    "vpe": {
        "NBQ_MAX_W": 7,
        "NBQ_MAX_H": 9,
        "NBQ_MAX_CIN": 13,
        "NBQ_MAX_COUT": 6,
        "NBQ_PM": 3,
        "NBQ_PN": 2,
    },
}
HEADER = S.parse_params_header()


@pytest.fixture(scope="session")
def kernels():
    """{(pe, "default" | "small"): CsimKernel}, built in parallel on first use."""
    jobs = [(pe, None) for pe in PES] + [(pe, SMALL[pe]) for pe in PES]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        list(ex.map(lambda j: csim.build(*j), jobs))
    out = {}
    for pe in PES:
        out[pe, "default"] = csim.get_kernel(pe)
        out[pe, "small"] = csim.get_kernel(pe, SMALL[pe])
    return out


# --- registers ----------------------------------------------------------------------------
@pytest.mark.parametrize("pe", PES)
def test_read_only_registers(kernels, pe):
    regs = kernels[pe, "default"].read_registers()
    assert regs["HW_ID"] == S.KERNEL_ID == 0x4E425143
    assert regs["HW_VERSION"] == S.VERSION
    assert regs["PE_KIND"] == S.PE_KINDS[pe]
    assert regs["STATUS"] == 0
    info = kernels[pe, "default"].info
    assert (info.pm, info.pn) == (HEADER[f"NBQ_{pe.upper()}_PM"], HEADER[f"NBQ_{pe.upper()}_PN"])
    assert (info.max_w, info.max_h, info.max_cin, info.max_cout) == (
        HEADER["NBQ_MAX_W"],
        HEADER["NBQ_MAX_H"],
        HEADER["NBQ_MAX_CIN"],
        HEADER["NBQ_MAX_COUT"],
    )
    assert (info.acc_bits, info.word_bits) == (48, 128)
    small = kernels[pe, "small"].info
    d = SMALL[pe]
    assert (small.pm, small.pn, small.max_w, small.max_h, small.max_cin, small.max_cout) == (
        d["NBQ_PM"],
        d["NBQ_PN"],
        d["NBQ_MAX_W"],
        d["NBQ_MAX_H"],
        d["NBQ_MAX_CIN"],
        d["NBQ_MAX_COUT"],
    )


# --- bit-exactness --------------------------------------------------------------------------
def _random_layers(pe, info, rng, count, max_hw):
    bits = (1, 2, 3, 4, 5) if pe == "svpe" else (16,)
    for i in range(count):
        n = bits[i % len(bits)]
        k, pool = (3, 1)[i % 2], 2 * (i // 2 % 2)
        cin = int(rng.integers(1, info.max_cin + 1))
        cout = int(rng.integers(1, 2 * info.max_cout + 3))
        h, w = int(rng.integers(1, max_hw)), int(rng.integers(1, max_hw))
        edge = i % 3 == 2
        spec = random_spec(rng, pe, cin, cout, k, pool, i % 4 != 3, n, edge, name=f"r{i}")
        yield spec, random_input(rng, 2, h, w, cin, edge=edge or i % 5 == 0)


@pytest.mark.parametrize("pe", PES)
def test_random_layers_with_tiling(kernels, pe):
    """Every n, 3x3/1x1, ReLU, pool, edge values, layers several times the buffers."""
    backend = csim.CsimBackend(pe, SMALL[pe], max_packet_bytes=1024)
    info = kernels[pe, "small"].info
    rng = np.random.default_rng(11 if pe == "svpe" else 12)
    for spec, x in _random_layers(pe, info, rng, 30, 3 * info.max_w):
        got = backend.run_conv(x, spec)
        assert np.array_equal(got, conv_layer(x, spec)), spec.name


@pytest.mark.parametrize("pe", PES)
def test_default_build(kernels, pe):
    """The shipped configuration, including a layer over MAX_W and MAX_COUT."""
    backend = csim.CsimBackend(pe)
    info = kernels[pe, "default"].info
    rng = np.random.default_rng(5)
    cases = [
        (random_spec(rng, pe, 3, info.max_cout + 6, 3, 2, True, 5), (1, 6, info.max_w + 6, 3)),
        (random_spec(rng, pe, info.pm + 5, 9, 3, 0, True, 5, edge=True), (2, 5, 7, info.pm + 5)),
        (random_spec(rng, pe, 2 * info.pm, 10, 1, 0, False, 4), (1, 3, 3, 2 * info.pm)),
        (random_spec(rng, pe, 1, 4, 3, 2, True, 1), (1, 9, 9, 1)),
    ]
    for spec, shape in cases:
        x = random_input(rng, *shape, edge=True)
        assert np.array_equal(backend.run_conv(x, spec), conv_layer(x, spec))


@pytest.mark.parametrize("pe", PES)
def test_edge_values(kernels, pe):
    """Saturation both ways, zero weights, the largest shifts, shift 0 and 62."""
    backend = csim.CsimBackend(pe, SMALL[pe])
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5) if pe == "svpe" else (16,):
        spec = random_spec(rng, pe, 7, 5, 3, 0, False, n, edge=True)
        for fill in (-32768, 32767):
            x = np.full((1, 4, 5, 7), fill, np.int16)
            assert np.array_equal(backend.run_conv(x, spec), conv_layer(x, spec))
    zero = random_spec(rng, pe, 4, 3, 3, 2, True, 2 if pe == "svpe" else 16)
    zero = type(zero)(
        "zero",
        0 * zero.weights,
        zero.mult,
        zero.bias,
        zero.shift,
        padding=1,
        pool=2,
        datapath=pe,
        n_bits=zero.n_bits,
        codes=None if zero.codes is None else 0 * zero.codes,
    )
    x = random_input(rng, 1, 6, 6, 4, edge=True)
    assert np.array_equal(backend.run_conv(x, zero), conv_layer(x, zero))


@pytest.mark.parametrize("pe", PES)
def test_every_call_matches_the_numpy_model_of_the_kernel(kernels, pe):
    """Byte for byte, per call: the recorded calls replayed on the C-simulation."""
    kernel = kernels[pe, "small"]
    rec = S.RecordingDevice(S.ReferenceDevice(kernel.info))
    rng = np.random.default_rng(21)
    for spec, x in _random_layers(pe, kernel.info, rng, 6, 14):
        S.run_conv(rec, x, spec, 1024)
    assert len(rec.calls) > 12
    for regs, packets, status, data in rec.calls:
        got, got_status = kernel.call(regs, packets, len(data))
        assert got_status == status
        assert bytes(got) == bytes(data)


# --- protocol faults ----------------------------------------------------------------------
def _one_call(kernel, rng, k=3, pool=False):
    """regs, packets, out_nbytes of a small single-tile LOAD call."""
    spec = random_spec(rng, kernel.info.pe, 3, 2, k, 2 if pool else 0, True, 3)
    rec = S.RecordingDevice(S.ReferenceDevice(kernel.info))
    S.run_conv(rec, random_input(rng, 1, 4, 4, 3), spec)
    regs, packets, _, data = rec.calls[0]
    return regs, packets, len(data)


@pytest.mark.parametrize("pe", PES)
def test_bad_configurations_touch_no_stream(kernels, pe):
    kernel = kernels[pe, "small"]
    regs, packets, n = _one_call(kernel, np.random.default_rng(0))
    info = kernel.info
    bad = [
        {**regs, "IN_W": info.max_w + 1},
        {**regs, "IN_H": info.max_h + 1},
        {**regs, "C_IN": info.max_cin + 1},
        {**regs, "C_OUT": info.max_cout + 1},
        {**regs, "C_OUT": 0},
        {**regs, "FLAGS": regs["FLAGS"] | 1 << 12},
        {**regs, "FLAGS": (regs["FLAGS"] & ~S.Flag.K3)},  # 1x1 with padding flags
        {**regs, "IN_H": 1, "FLAGS": int(S.Flag.K3 | S.Flag.LOAD | S.Flag.POOL)},
    ]
    for r in bad:
        data, status = kernel.call(r, [], 0)  # no packet: the kernel must read nothing
        assert status == S.Status.BAD_CONFIG, r


@pytest.mark.parametrize("pe", PES)
def test_every_call_ends_with_one_status_word(kernels, pe):
    """Protocol 2.x/3.x: probe, refused and normal calls all end with a TLAST status word."""
    wb = S.WORD_BYTES
    kernel = kernels[pe, "small"]
    regs, packets, n = _one_call(kernel, np.random.default_rng(3))
    probe = dict.fromkeys(S.WRITE_REGISTERS, 0) | {"FLAGS": int(S.Flag.PROBE)}
    cases = [
        (probe, [], 0, 0),
        ({**regs, "IN_W": kernel.info.max_w + 1}, [], n, S.Status.BAD_CONFIG),
        (
            {**regs, "C_OUT": regs["C_OUT"] + 1, "FLAGS": regs["FLAGS"] & ~S.Flag.LOAD},
            [],
            n,
            S.Status.NO_WEIGHTS,
        ),
        (regs, packets, n, 0),
    ]
    for r, p, nbytes, want in cases:
        words, last, ro, rc = kernel.raw_call(r, p, nbytes)
        assert rc == 0
        assert last[-1] == 1 and not last[:-1].any()
        assert int.from_bytes(bytes(words[-wb:]), "little") == (S.STATUS_MAGIC << 32) | want
        assert ro["STATUS"] == want
        assert len(words) == (wb if (want or not p) else n + wb)


@pytest.mark.parametrize("pe", PES)
def test_no_weights_without_load(kernels, pe):
    kernel = kernels[pe, "small"]
    regs, packets, n = _one_call(kernel, np.random.default_rng(1))
    assert kernel.call(regs, packets, n)[1] == 0
    again = {**regs, "FLAGS": regs["FLAGS"] & ~S.Flag.LOAD}
    assert kernel.call(again, packets[-1:], n)[1] == 0  # same shape: weights held
    other = {**again, "C_OUT": regs["C_OUT"] + 1}
    assert kernel.call(other, [], n)[1] == S.Status.NO_WEIGHTS


@pytest.mark.parametrize("pe", PES)
def test_tlast_faults(kernels, pe):
    kernel = kernels[pe, "small"]
    regs, (w, q, fm), n = _one_call(kernel, np.random.default_rng(2))
    wb = S.WORD_BYTES
    if len(w) > wb:  # weights split in two packets: TLAST before the weights end
        _, status = kernel.call(regs, [w[:wb], w[wb:], q, fm], n)
        assert status & S.Status.TLAST_EARLY
    _, status = kernel.call(regs, [np.concatenate([w, q]), fm], n)  # no TLAST after weights
    assert status & S.Status.TLAST_MISSING
    with pytest.raises(S.KernelError, match="read past the end"):
        kernel.call(regs, [w, q, fm[:-wb]], n)
    with pytest.raises(S.KernelError, match="left input words unread"):
        kernel.call(regs, [w, q, np.concatenate([fm, fm[:wb]])], n)
    with pytest.raises(S.KernelError, match="received .* bytes .* expected"):
        kernel.call(regs, [w, q, fm], n + wb)


# --- refusals -----------------------------------------------------------------------------
def test_pe_kind_and_size_mismatch_refused(kernels):
    rng = np.random.default_rng(4)
    svpe_only = csim.CsimBackend("svpe", SMALL["svpe"])
    with pytest.raises(ValueError, match="holds the svpe kernel .* cannot run vpe"):
        svpe_only.run_conv(random_input(rng, 1, 3, 3, 2), random_spec(rng, "vpe", 2, 2, 3))
    manifest = conv_manifest("vpe", 16, [])
    with pytest.raises(ValueError, match="datapath is 'vpe' but the kernel's PE_KIND .* 'svpe'"):
        svpe_only.check_bundle(manifest)
    wide = conv_manifest("svpe", 3, [("c", 21, 3, 1, 30)], size=4)
    with pytest.raises(ValueError, match="21 input channels > MAX_CIN 20"):
        svpe_only.check_bundle(wide)
    with pytest.raises(ValueError, match="MAX_CIN register allows 20"):
        svpe_only.run_conv(random_input(rng, 1, 3, 3, 21), random_spec(rng, "svpe", 21, 2, 3))


# --- the engine on bundles ---------------------------------------------------------------------
@pytest.mark.parametrize("pe", PES)
def test_engine_on_random_bundles(kernels, tmp_path, pe):
    from pynq_nbq.engine import Engine
    from pynq_nbq.testing import random_bundle

    bundle = random_bundle(tmp_path / pe, pe, 3, seed=3, size=12, width=6)
    x = np.random.default_rng(0).normal(0, 1, (3, 1, 12, 12))
    numpy_engine = Engine(bundle, "numpy")
    csim_engine = Engine(bundle, csim.CsimBackend())
    xq = numpy_engine.quantize_input(x)
    assert np.array_equal(csim_engine.run(xq), numpy_engine.run(xq))


def test_cli_classify_with_csim(kernels, tmp_path, capsys):
    from PIL import Image

    from pynq_nbq.cli import main
    from pynq_nbq.testing import random_bundle

    random_bundle(tmp_path / "b", "vpe", 16, seed=1, size=16, width=4)
    img = tmp_path / "x.png"
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(img)
    assert main(["classify", "--backend", "csim", "--model", str(tmp_path / "b"), str(img)]) == 0
    out = capsys.readouterr().out
    assert "backend csim: HLS kernel" in out and "C-simulation" in out and "emulated" in out


FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


@pytest.mark.parametrize("model", ["fmnist-svpe", "fmnist-vpe"])
def test_embedded_bundles_on_fashion_mnist(kernels, model):
    """The embedded default bundles, 24 fixed test images: csim == numpy."""
    from pynq_nbq import api

    if model not in api.embedded_models():
        pytest.skip(f"embedded bundle {model} not present")
    if not os.path.exists(FASHION):
        pytest.skip("Fashion-MNIST test set not installed")
    sys.path.insert(0, str(S.HLS_DIR.parent / "scripts"))
    from bench_csim import fashion_batch

    m_np = api.load_model(model, "numpy")
    m_cs = api.load_model(model, csim.CsimBackend())
    batch, _ = fashion_batch(m_np.input_spec, 24, start=0)
    xq = m_np.engine.quantize_input(batch)
    assert np.array_equal(m_cs.engine.run(xq), m_np.engine.run(xq))


# --- building -------------------------------------------------------------------------------
def test_clear_errors_when_tools_are_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler++")
    with pytest.raises(csim.CsimError, match="'no-such-compiler\\+\\+' not found on PATH"):
        csim.compiler()
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("NBQ_AP_INCLUDE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(csim.CsimError, match="ap_int.h.*pip install hls4ml"):
        csim.ap_include_dir()
    monkeypatch.setenv("NBQ_HLS_DIR", str(tmp_path))
    with pytest.raises(csim.CsimError, match="HLS sources not found .*nbq_conv.cpp"):
        csim.hls_dir()


def test_concurrent_builds_share_one_atomic_result(monkeypatch, tmp_path):
    """Two threads ask for the same new build: one compiles, both get the whole file."""
    monkeypatch.setenv("NBQ_CACHE_DIR", str(tmp_path))
    runs = []

    def fake_command(output, pe, defines=None, target="library", sanitize=False):
        return ["sh", "-c", f"echo run >> {tmp_path}/runs; sleep 0.3; echo lib > {output}"]

    monkeypatch.setattr(csim, "compile_command", fake_command)
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        runs.append(csim.build("svpe", {"NBQ_MAX_W": 9}))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs[0] == runs[1] and runs[0].read_text() == "lib\n"
    assert (tmp_path / "runs").read_text() == "run\n"
    assert not list(tmp_path.glob(".nbq_*"))  # no temporary left behind


# --- sanitizers -------------------------------------------------------------------------------
@pytest.mark.slow
def test_kernel_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """The C++ testbench, built with -fsanitize=address,undefined, replays numpy vectors."""
    with ThreadPoolExecutor(max_workers=2) as ex:
        tbs = dict(
            zip(
                PES,
                ex.map(
                    lambda pe: csim.build(pe, SMALL[pe], target="testbench", sanitize=True), PES
                ),
                strict=True,
            )
        )
    for pe in PES:
        d = SMALL[pe]
        vec = tmp_path / f"{pe}.bin"
        gen_vectors.main(
            [
                "--pe",
                pe,
                "--out",
                str(vec),
                "--pm",
                str(d["NBQ_PM"]),
                "--pn",
                str(d["NBQ_PN"]),
                "--max-h",
                str(d["NBQ_MAX_H"]),
                "--max-w",
                str(d["NBQ_MAX_W"]),
                "--max-cin",
                str(d["NBQ_MAX_CIN"]),
                "--max-cout",
                str(d["NBQ_MAX_COUT"]),
                "--max-packet-bytes",
                "512",
            ]
        )
        env = {
            **os.environ,
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        }
        res = subprocess.run(
            [str(tbs[pe]), str(vec)], capture_output=True, text=True, env=env, timeout=300
        )
        assert res.returncode == 0 and "PASS" in res.stdout, res.stdout + res.stderr
        assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, res.stderr


def test_testbench_of_a_3_bit_build_replays_vectors_made_for_it(tmp_path):
    """gen_vectors --code-bits 3 (what run_hls.tcl passes for NBQ_CODE_BITS=3) writes vectors
    of n <= 3 layers that the 3-bit build's testbench replays bit for bit."""
    d = {**SMALL["svpe"], "NBQ_CODE_BITS": 3}
    tb = csim.build("svpe", d, target="testbench")
    vec = tmp_path / "svpe3.bin"
    args = ["--pe", "svpe", "--code-bits", "3", "--out", str(vec), "--max-packet-bytes", "512"]
    for key in ("PM", "PN", "MAX_H", "MAX_W", "MAX_CIN", "MAX_COUT"):
        args += [f"--{key.lower().replace('_', '-')}", str(d[f"NBQ_{key}"])]
    assert gen_vectors.main(args) == 0
    res = subprocess.run([str(tb), str(vec)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "PASS" in res.stdout, res.stdout + res.stderr
