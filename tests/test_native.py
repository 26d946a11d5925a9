"""The native C kernel is exact: equal to the integer loops and to the numpy engine.

Every code path of the kernel that this CPU can run is built and checked: the build
tuned for this CPU (AVX-512 VNNI here), AVX2 without AVX-512, and plain C (the path
of a CPU without a SIMD version); the boards' builds (aarch64 NEON, armv7 NEON, armv7
plain C) are cross-compiled and run under qemu-user on layers and whole networks
(`CROSS`, when the cross compilers and qemu-user are installed).
"""

import copy
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_engine_exact import CASES, _random_layer
from test_engine_exact import _check as check_against_loops

from pynq_nbq import api, native, ops
from pynq_nbq import datapath as dp
from pynq_nbq.backends import get_backend
from pynq_nbq.backends.native import NativeBackend
from pynq_nbq.bundle import save_bundle
from pynq_nbq.engine import Engine
from pynq_nbq.errors import NbqError
from pynq_nbq.testing import random_bundle, random_graph_bundle


def _cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _targets() -> list[tuple[str, tuple[str, ...] | None]]:
    """(id, build flags) of every kernel version this machine can run."""
    out = [("tuned", None), ("plain-c", ())]
    if "avx2" in _cpu_flags():
        out.append(("avx2", ("-mavx2", "-mno-avx512f")))
    return out


_LIBS: dict = {}


@pytest.fixture(params=_targets(), ids=lambda t: t[0], scope="module")
def lib(request):
    _, flags = request.param
    if flags not in _LIBS:
        _LIBS[flags] = native.library() if flags is None else native.Library(native.build(flags))
    return _LIBS[flags]


def test_each_build_says_what_it_is(lib):
    assert lib.isa and lib.k_unit in (1, 2)


def _check(spec, x, lib):
    got = native.conv_layer(x, spec, lib)
    np.testing.assert_array_equal(got, ops.conv_layer(x, spec))
    check_against_loops(spec, x, got)


@pytest.mark.parametrize("n_bits", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("case", CASES)
def test_svpe_layers_match_integer_loops(lib, n_bits, case):
    rng = np.random.default_rng(hash((n_bits, case)) % 2**32)
    spec, x = _random_layer(rng, n_bits, "svpe", *case)
    _check(spec, x, lib)


@pytest.mark.parametrize("case", CASES)
def test_vpe_layers_match_integer_loops(lib, case):
    rng = np.random.default_rng(hash(case) % 2**32)
    spec, x = _random_layer(rng, 16, "vpe", *case)
    _check(spec, x, lib)


@pytest.mark.parametrize("datapath,n_bits", [("svpe", 1), ("svpe", 3), ("svpe", 5), ("vpe", 16)])
@pytest.mark.parametrize("weights", ["zero", "largest"])
@pytest.mark.parametrize("inputs", ["random", "saturating"])
def test_edge_values(lib, datapath, n_bits, weights, inputs):
    rng = np.random.default_rng(7)
    spec, x = _random_layer(rng, n_bits, datapath, 3, 4, 3, 1, 1, 1, True, 2, weights, inputs)
    _check(spec, x, lib)


def test_odd_sizes_and_one_by_one_maps(lib):
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (3, 1), (5, 9), (2, 2), (1, 7), (28, 28)]:
        for pool in (0, 2):
            for cin in (3, 4):  # 3: in place with a zero channel on x86 (odd 3 x cin)
                spec, x = _random_layer(rng, 3, "svpe", cin, 2, 3, 1, 1, 1, True, pool, h=h, w=w)
                _check(spec, x, lib)


@pytest.mark.parametrize("datapath,n_bits", [("svpe", 1), ("svpe", 3)])
@pytest.mark.parametrize("weights", ["zero", "largest"])
@pytest.mark.parametrize("inputs", ["random", "saturating"])
def test_edge_values_read_in_place(lib, datapath, n_bits, weights, inputs):
    rng = np.random.default_rng(8)
    spec, x = _random_layer(
        rng, n_bits, datapath, 8, 4, 3, 1, 1, 1, True, 2, weights, inputs, h=12, w=13
    )
    assert lib.reads_in_place(spec, x.shape[1], x.shape[2])
    _check(spec, x, lib)


# wider layers (many panels, several pixel chunks, a fan-in over one int32 block):
# checked against the numpy reference, itself proven against the loops above
WIDE = [
    # datapath, n_bits, cin, cout, k, stride, padding, pool, h, w
    ("svpe", 3, 32, 40, 3, 1, 1, 2, 13, 11),
    ("svpe", 5, 70, 33, 3, 1, 1, 0, 9, 10),  # 5-bit, fan-in 630: split
    ("vpe", 16, 64, 17, 3, 1, 1, 2, 10, 9),  # fan-in 576 > one int32 block of 510
    ("vpe", 16, 600, 10, 1, 1, 0, 0, 1, 1),  # a linear layer (1x1 conv on a 1x1 map)
    ("svpe", 4, 300, 10, 1, 1, 0, 0, 1, 1),
    ("svpe", 2, 16, 24, 5, 2, 2, 0, 12, 12),  # an ARM-side conv: 5x5, stride 2, pad 2
]


@pytest.mark.parametrize("case", WIDE, ids=lambda c: f"{c[0]}{c[1]}-{c[2]}x{c[3]}-k{c[4]}")
@pytest.mark.parametrize("inputs", ["random", "saturating"])
def test_wide_layers_match_numpy(lib, case, inputs):
    datapath, n_bits, cin, cout, k, stride, pad, pool, h, w = case
    rng = np.random.default_rng(cin * cout)
    for weights in ("random", "largest"):
        spec, x = _random_layer(
            rng, n_bits, datapath, cin, cout, k, stride, pad, 1, False, pool, weights, inputs, h, w
        )
        np.testing.assert_array_equal(native.conv_layer(x, spec, lib), ops.conv_layer(x, spec))


def _edge_spec(fan_in: int, w: int, mult: int = 1, shift: int = 16):
    return ops.ConvSpec(
        "edge",
        np.full((2, fan_in, 1, 1), w, np.int64),
        np.array([mult, -mult]),
        np.zeros(2, np.int64),
        np.full(2, shift),
        relu=False,
    )


@pytest.mark.parametrize("fan_in,mode", [(16384, "split"), (16383, "int32")])
def test_int32_only_when_every_partial_sum_fits(lib, fan_in, mode):
    # V = fan_in * 2^15 * 4: 2^31 does not fit int32 as +V (split), 2^31 - 2^17 does
    spec = _edge_spec(fan_in, -4, shift=20)
    assert lib.plan(spec).mode == mode
    x = np.full((1, 1, 1, fan_in), -32768, np.int16)  # acc = +V, every partial sum > 0
    got = native.conv_layer(x, spec, lib)
    np.testing.assert_array_equal(got, ops.conv_layer(x, spec))
    v = fan_in * 2**15 * 4
    assert got.ravel().tolist() == [(v + 2**19) >> 20, (-v + 2**19) >> 20]


def test_split_weights_at_the_int16_extremes(lib):
    for w in (-32768, 32767, -129, 128, 255, -256, 16384):
        spec = _edge_spec(700, w, mult=3, shift=30)
        assert lib.plan(spec).mode == "split"  # 700 * 2^15 * 128 > 2^30
        for xv in (-32768, 32767):
            x = np.full((1, 1, 1, 700), xv, np.int16)
            np.testing.assert_array_equal(native.conv_layer(x, spec, lib), ops.conv_layer(x, spec))


def test_grouped_conv_runs_in_the_numpy_reference(lib):
    rng = np.random.default_rng(4)
    spec, x = _random_layer(rng, 3, "svpe", 4, 4, 3, 1, 1, 2, False, 0)
    assert lib.plan(spec) is None
    np.testing.assert_array_equal(native.conv_layer(x, spec, lib), ops.conv_layer(x, spec))


def test_bad_input_shape_is_refused(lib):
    spec, x = _random_layer(np.random.default_rng(1), 3, "svpe", 3, 4, 3, 1, 1, 1, True, 0)
    with pytest.raises(ValueError, match="3 channels"):
        native.conv_layer(x[..., :2], spec, lib)


# --- the engine ---------------------------------------------------------------------
def _batch(engine, n, seed=0):
    shape = engine.tensors[engine.input_name]["shape"]
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    return engine.quantize_input(3 * x)  # some inputs saturate


@pytest.mark.parametrize("datapath,n_bits", [("svpe", 1), ("svpe", 3), ("svpe", 5), ("vpe", 16)])
@pytest.mark.parametrize("threads,n", [(1, 5), (2, 7), (3, 64)])
def test_engine_on_native_equals_numpy_engine(tmp_path, datapath, n_bits, threads, n):
    bundle = random_bundle(tmp_path / "b", datapath, n_bits, seed=n, size=12, width=6)
    x = _batch(Engine(bundle), n)
    want = Engine(bundle, "numpy").run(x)
    np.testing.assert_array_equal(Engine(bundle, "native", threads=threads).run(x), want)


@pytest.mark.parametrize("n_bits", [1, 2, 3, 4, 5, 16])
@pytest.mark.parametrize("edge", [False, True])
def test_every_op_graph_native_equals_numpy(tmp_path, n_bits, edge):
    """ARM-side layers too (strided, grouped, depthwise conv; linear; add, concat)."""
    datapath = "vpe" if n_bits == 16 else "svpe"
    bundle = random_graph_bundle(tmp_path / "g", datapath, n_bits, seed=n_bits, edge=edge)
    fast = Engine(bundle, "native", threads=2)
    assert {layer["op"] for layer in bundle.layers} >= {"conv", "linear"}
    x = _batch(fast, 9, seed=n_bits)
    np.testing.assert_array_equal(fast.run(x), Engine(bundle, "numpy").run(x))


@pytest.mark.parametrize("name", ["fmnist-svpe", "fmnist-vpe"])
def test_embedded_models_native_equals_numpy(name):
    fast, ref_model = api.load_model(name, "native", threads=2), api.load_model(name, "numpy")
    x = _batch(fast.engine, 48, seed=2)
    np.testing.assert_array_equal(fast.engine.run(x), ref_model.engine.run(x))
    modes = {fast.engine.backend.library.plan(s.spec).mode for s in fast.engine.steps if s.spec}
    assert modes == ({"int32"} if name == "fmnist-svpe" else {"split"})


def test_fastest_conv_is_native_here_and_numpy_without_a_kernel(monkeypatch):
    assert native.fastest_conv() is native.conv_layer
    monkeypatch.setenv("NBQ_NATIVE", "0")
    native.reset()
    try:
        assert native.fastest_conv() is ops.conv_layer
    finally:
        monkeypatch.delenv("NBQ_NATIVE")
        native.reset()


def test_auto_is_native_here_and_reports_it():
    model = api.load_model(backend="auto")
    assert model.backend_name == "native"
    assert "native C kernel" in model.engine.backend.description


@pytest.fixture
def no_native(monkeypatch, tmp_path):
    """The native kernel made unavailable: no C compiler, an empty build cache."""
    monkeypatch.setenv("NBQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler-nbq")
    native.reset()
    yield
    native.reset()


def test_without_a_compiler_auto_falls_back_to_numpy(no_native):
    backend = get_backend("auto")
    assert backend.name == "numpy"
    assert "no-such-compiler-nbq" in backend.fallback_reason
    assert "native kernel unavailable" in backend.description
    with pytest.raises(NbqError, match="no C compiler"):
        NativeBackend()


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv("NBQ_NATIVE", "0")
    native.reset()
    try:
        assert get_backend("auto").fallback_reason == "native engine: turned off (NBQ_NATIVE=0)"
    finally:
        monkeypatch.delenv("NBQ_NATIVE")
        native.reset()


def test_a_failed_build_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("NBQ_CACHE_DIR", str(tmp_path))
    with pytest.raises(native.NativeError, match="building the native kernel failed"):
        native.build(("-mno-such-flag-nbq",))
    assert not list(tmp_path.glob("*.so"))  # nothing half-built left in the cache


HARNESS = Path(__file__).resolve().parent / "native_harness.c"


@dataclass(frozen=True)
class Cross:
    """A cross-compiled build of the kernel run under qemu-user (the boards' CPUs)."""

    id: str
    cc: str
    flags: tuple[str, ...]
    qemu: tuple[str, ...]  #: the emulator and the CPU it emulates
    isa: str  #: what nbq_native_isa() says
    insn: str  #: the multiply-accumulate the build must contain

    def missing(self) -> str | None:
        tools = [t for t in (self.cc, self.qemu[0]) if shutil.which(t) is None]
        return f"{' and '.join(tools)} not installed" if tools else None

    def harness(self, tmp_path: Path) -> Path:
        exe = tmp_path / f"harness-{self.id}"
        cmd = [self.cc, "-O3", *self.flags, "-std=c11", "-static", "-pthread"]
        subprocess.run([*cmd, str(HARNESS), str(native.SOURCE), "-o", str(exe)], check=True)
        return exe

    def run(self, exe: Path, *args: str) -> str:
        res = subprocess.run([*self.qemu, str(exe), *args], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout


#: The boards' CPUs: the ZU+ boards' Cortex-A53 (aarch64), the PYNQ-Z2's Cortex-A9 (armv7l,
#: armhf) with NEON (the flags the board build adds: native.arch_targets) and without it
#: (the plain-C kernel a CPU without NEON gets)
CROSS = [
    Cross(
        "aarch64-neon",
        "aarch64-linux-gnu-gcc",
        ("-mcpu=cortex-a53",),
        ("qemu-aarch64", "-cpu", "cortex-a53"),
        "aarch64 NEON",
        "smlal",
    ),
    Cross(
        "armv7-neon",
        "arm-linux-gnueabihf-gcc",
        ("-mcpu=cortex-a9", *native.ARMV7_NEON_FLAGS, "-mfloat-abi=hard"),
        ("qemu-arm", "-cpu", "cortex-a9"),
        "armv7 NEON",
        "vmlal.s16",
    ),
    Cross(
        "armv7-plain",
        "arm-linux-gnueabihf-gcc",
        ("-mcpu=cortex-a9", "-mfpu=vfpv3-d16", "-mfloat-abi=hard"),  # armhf's baseline FPU
        ("qemu-arm", "-cpu", "cortex-a9"),
        "generic C",
        "mla",
    ),
]
cross_builds = pytest.mark.parametrize("cross", CROSS, ids=lambda c: c.id)


@cross_builds
def test_cross_source_compiles_with_its_simd(cross, tmp_path):
    """Each board build compiles cleanly (-Wall -Wextra -Werror) to its ISA."""
    if cross.missing():
        pytest.skip(cross.missing())
    asm = tmp_path / "k.s"
    cmd = [cross.cc, "-O3", *cross.flags, "-std=c11", "-Wall", "-Wextra", "-Werror"]
    subprocess.run([*cmd, "-S", str(native.SOURCE), "-o", str(asm)], check=True)
    text = asm.read_text()
    assert cross.insn in text and cross.isa in text
    if "NEON" not in cross.isa:  # no NEON instruction at all (a CPU without NEON runs it)
        assert "vld1" not in text and "vmlal" not in text


@pytest.mark.parametrize(
    "machine,features,first",
    [
        ("x86_64", {"avx2"}, ("-march=native",)),
        ("aarch64", {"asimd"}, ("-mcpu=native",)),
        ("armv7l", {"half", "vfp", "neon", "vfpv3"}, ("-mcpu=native", "-mfpu=neon")),
        ("armv8l", {"asimd"}, ("-mcpu=native", "-mfpu=neon")),
        ("armv7l", {"half", "vfp", "vfpv3d16"}, ()),
        ("riscv64", set(), ()),
    ],
)
def test_build_flags_follow_the_cpu(machine, features, first):
    """NEON flags on 32-bit Arm only when the CPU lists NEON; plain C is always last."""
    targets = native.arch_targets(machine, features)
    assert targets[0][: len(first)] == first and targets[-1] == ()
    neon = any("-mfpu=neon" in t for t in targets)
    assert neon == (machine.startswith("armv") and bool(features & {"neon", "asimd"}))


def test_cpu_features_and_float_abi_of_an_armv7l_board(tmp_path, monkeypatch):
    """A Zynq-7000's /proc/cpuinfo (the PYNQ-Z2's two Cortex-A9) lists NEON; the armhf
    Python of its Ubuntu image names the hard-float ABI."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: ARMv7 Processor rev 0 (v7l)\nBogoMIPS\t: 650.00\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpd32\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xc09\n"
    )
    assert {"neon", "vfpv3"} <= native.cpu_features(info)
    assert native.cpu_features(tmp_path / "missing") == set()
    for multiarch, abi in [("arm-linux-gnueabihf", "hard"), ("arm-linux-gnueabi", "softfp")]:
        monkeypatch.setattr(native.sysconfig, "get_config_var", lambda v, m=multiarch: m)
        assert native.float_abi() == abi


@pytest.mark.parametrize(
    "features,isa", [({"neon", "vfpv3"}, "armv7 NEON"), ({"vfp"}, "generic C")]
)
def test_armv7l_board_build_picks_neon_when_the_cpu_has_it(monkeypatch, tmp_path, features, isa):
    """native.build() as on the PYNQ-Z2 (armv7l, armhf, with or without NEON), through the
    armhf cross compiler: the library it caches is the NEON kernel exactly when the CPU
    has NEON (a -mcpu=native the cross compiler refuses falls through to the next flags)."""
    cc = CROSS[1].cc
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("NBQ_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native.platform, "machine", lambda: "armv7l")
    monkeypatch.setattr(native, "cpu_features", lambda: features)
    monkeypatch.setattr(native, "float_abi", lambda: "hard")
    built = native.build().read_bytes()
    assert isa.encode() in built
    assert (b"armv7 NEON" in built) == ("neon" in features)


def _harness_input(specs_and_inputs) -> bytes:
    """The harness's input file (see tests/native_harness.c)."""
    parts = []
    for spec, x in specs_and_inputs:
        mode, rows, kblock = native.layer_rows(spec)
        n, h, w, cin = x.shape
        head = [n, h, w, cin, spec.out_channels, spec.kernel, spec.stride, spec.padding]
        head += [int(spec.relu), spec.pool, int(mode == "split"), kblock]
        parts += [np.array(head, np.int64), x.astype(np.int16), rows.astype(np.int16)]
        offset = spec.bias + dp.half(spec.shift)
        parts += [spec.mult.astype(np.int64), offset.astype(np.int64)]
        parts.append(spec.shift.astype(np.int64))
    return b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


@cross_builds
def test_cross_kernel_is_exact_under_qemu(cross, tmp_path):
    """Each board build (aarch64 NEON, armv7 NEON, armv7 plain C), run under qemu-user,
    equals the numpy reference: int32 and split layers, saturating inputs, a fan-in at
    the int32 limit."""
    if cross.missing():
        pytest.skip(cross.missing())
    exe = cross.harness(tmp_path)
    rng = np.random.default_rng(11)
    cases = []
    for datapath, n_bits in [("svpe", 1), ("svpe", 3), ("svpe", 5), ("vpe", 16)]:
        for case in [*CASES[:4], (70, 20, 3, 1, 1, 1, True, 2), (600, 10, 1, 1, 0, 1, False, 0)]:
            for inputs in ("random", "saturating"):
                cases.append(_random_layer(rng, n_bits, datapath, *case, inputs=inputs))
    cases.append((_edge_spec(16384, -4), np.full((1, 1, 1, 16384), -32768, np.int16)))
    assert {native.layer_rows(s)[0] for s, _ in cases} == {"int32", "split"}
    (tmp_path / "in").write_bytes(_harness_input(cases))
    assert cross.isa in cross.run(exe, str(tmp_path / "in"), str(tmp_path / "out"))
    got = np.frombuffer((tmp_path / "out").read_bytes(), np.int16)
    want = [ops.conv_layer(x, s) for s, x in cases]
    assert got.size == sum(w.size for w in want)
    offset = 0
    for w in want:
        np.testing.assert_array_equal(got[offset : offset + w.size].reshape(w.shape), w)
        offset += w.size


# --- the whole network in one native call ---------------------------------------------
def _chain_bundle(tmp_path, datapath, n_bits, seed, width, gap_frac=None, size=12):
    """random_bundle (conv, conv, conv, gap), optionally with another gap output frac."""
    b = random_bundle(tmp_path / "b", datapath, n_bits, seed=seed, size=size, width=width)
    if gap_frac is None:
        return b
    manifest = copy.deepcopy(b.manifest)
    manifest["tensors"]["gap"]["frac"] = gap_frac
    return save_bundle(manifest, dict(b.arrays), tmp_path / "b2")


def _chain_with_linear(tmp_path, datapath, n_bits, seed):
    """random_bundle's convs and gap, then a flatten and two linear layers (a chain)."""
    from pynq_nbq.testing import ROLES, random_requant, random_weights, weighted_fields

    b = random_bundle(tmp_path / "b", datapath, n_bits, seed=seed, size=12, width=20)
    manifest, arrays = copy.deepcopy(b.manifest), dict(b.arrays)
    rng = np.random.default_rng(seed)
    bits = manifest["weight_bits"]
    manifest["layers"].append(
        {
            "name": "fl",
            "op": "flatten",
            "inputs": ["gap"],
            "output": "fl",
            "in_shape": [10],
            "out_shape": [10],
        }
    )
    manifest["tensors"]["fl"] = dict(manifest["tensors"]["gap"])
    src = "fl"
    for name, cout, relu in (("fc1", 24, True), ("fc2", 10, False)):
        cin = manifest["tensors"][src]["shape"][0]
        w = random_weights(rng, (cout, cin), datapath, n_bits)
        fields = weighted_fields(datapath, bits, w.shape)
        for role, a in random_requant(rng, cout, fields["fan_in"] * 4096.0).items():
            arrays[f"{name}.{role}"] = a
        arrays[f"{name}.weights"] = w
        manifest["tensors"][name] = {"shape": [cout], "frac": 9}
        manifest["layers"].append(
            {
                "name": name,
                "op": "linear",
                "inputs": [src],
                "output": name,
                "in_shape": [cin],
                "out_shape": [cout],
                "relu": relu,
                "weight_bits": bits,
                "weight_exp": -6,
                "acc_bits": fields["acc_bits"],
                "arrays": {r: f"{name}.{r}" for r in ROLES},
            }
        )
        src = name
    manifest["output"] = "fc2"
    return save_bundle(manifest, arrays, tmp_path / "lin")


@pytest.mark.parametrize("datapath,n_bits", [("svpe", 3), ("vpe", 16)])
def test_whole_network_with_linear_layers(lib, tmp_path, datapath, n_bits):
    bundle = _chain_with_linear(tmp_path, datapath, n_bits, 5)
    ref = Engine(bundle, "numpy")
    x = _batch(ref, 5, seed=1)
    want = ref.run(x)
    for threads in (1, 2, 3):
        fast = _network_engine(bundle, lib, threads)
        assert fast._network is not None
        for n in (1, 2, 5):
            np.testing.assert_array_equal(fast.run(x[:n]), want[:n])


def _network_engine(bundle, lib, threads):
    """An engine whose backend is the native backend on ``lib`` (one of the builds)."""
    backend = NativeBackend()
    backend.library = lib
    return Engine(bundle, backend, threads=threads)


@pytest.mark.parametrize(
    "datapath,n_bits,width,gap_frac",
    [("svpe", 3, 6, None), ("svpe", 5, 40, 12), ("vpe", 16, 33, 4), ("svpe", 1, 70, None)],
)
def test_whole_network_equals_numpy_engine(lib, tmp_path, datapath, n_bits, width, gap_frac):
    """Every build, 1 to 4 threads, batches below, at and above the thread count (shared
    images split by rows, pixels and panels; whole images per thread); wide layers
    (several panels), split accumulation (vpe), gap frac shifts up and down."""
    bundle = _chain_bundle(tmp_path, datapath, n_bits, width, width, gap_frac)
    ref = Engine(bundle, "numpy")
    x = _batch(ref, 9, seed=width)
    want = ref.run(x)
    for threads in (1, 2, 3, 4):
        fast = _network_engine(bundle, lib, threads)
        assert fast._network is not None  # the chain runs whole
        for n in (1, 2, 3, 5, 9):
            np.testing.assert_array_equal(fast.run(x[:n]), want[:n])


def test_whole_network_from_many_python_threads(tmp_path):
    """Concurrent calls on one engine each get their own native network: same results."""
    import threading

    bundle = _chain_bundle(tmp_path, "svpe", 3, 1, 40)
    fast = Engine(bundle, "native", threads=2)
    x = _batch(fast, 16, seed=3)
    want = Engine(bundle, "numpy").run(x)
    bad = []

    def call(i):
        for _ in range(20):
            if not np.array_equal(fast.run(x[i : i + 1 + i % 3]), want[i : i + 1 + i % 3]):
                bad.append(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_graphs_that_are_not_a_chain_run_layer_by_layer(tmp_path):
    bundle = random_graph_bundle(tmp_path / "g", "svpe", 3, seed=1)
    fast = Engine(bundle, "native", threads=2)
    assert fast._network is None  # adds, concats: per layer, still exact
    x = _batch(fast, 3)
    np.testing.assert_array_equal(fast.run(x), Engine(bundle, "numpy").run(x))


@pytest.mark.parametrize("name", ["fmnist-svpe", "fmnist-vpe"])
def test_embedded_models_run_whole_and_keep_works(name):
    fast = api.load_model(name, "native", threads=2)
    assert fast.engine._network is not None
    x = _batch(fast.engine, 3, seed=4)
    out, env = fast.engine.run(x, keep=True)  # keep=True: layer by layer, every tensor
    np.testing.assert_array_equal(fast.engine.run(x), out)
    assert len(env) > 3


def test_both_patch_paths_are_tested(lib):
    """The layers above include ones read in place and ones whose patches are copied."""
    rng = np.random.default_rng(0)
    seen = set()
    for case in CASES:
        spec, x = _random_layer(rng, 3, "svpe", *case)
        seen.add(lib.reads_in_place(spec, x.shape[1], x.shape[2]))
    for datapath, n_bits, cin, cout, k, stride, pad, pool, h, w in WIDE:
        spec, x = _random_layer(
            rng, n_bits, datapath, cin, cout, k, stride, pad, 1, False, pool, h=h, w=w
        )
        seen.add(lib.reads_in_place(spec, h, w))
    assert seen == {True, False}


@pytest.mark.parametrize("name", ["fmnist-svpe"])
def test_embedded_svpe_reads_its_wide_layers_in_place(name):
    model = api.load_model(name, "native")
    lib = model.engine.backend.library
    where = {
        s.layer.name: lib.reads_in_place(s.spec, *s.layer.in_shape[1:])
        for s in model.engine.steps
        if s.spec is not None
    }
    # features.0 (1 channel) with a zero channel on x86; features.14 (7 x 7) copies patches
    assert where["features.0"] and where["features.3"] and where["features.10"]
    assert not where["features.14"]


@pytest.mark.parametrize("mult", [-32768, 32767, -1, 0, 12345])
@pytest.mark.parametrize("shift", [15, 16, 17, 31, 47, 48])
@pytest.mark.parametrize("bias", [0, 1 << 45, -(1 << 45), (1 << 46) + 5, -(1 << 46) - 3])
def test_requantisation_at_its_range_edges(lib, mult, shift, bias):
    """Accumulators near +-2^31 (int32 mode), extreme multipliers, biases at and beyond the
    32-bit requantisation's range, shifts on both sides of its limits (16..47): the
    kernel picks the 32-bit or the 64-bit requantisation and both equal the numpy one."""
    fan_in = 16383  # V = fan_in * 2^15 * 4 < 2^31: int32 accumulation
    w = np.full((4, fan_in, 1, 1), 4, np.int64)
    w[1], w[3] = -4, -1
    spec = ops.ConvSpec(
        "edge",
        w,
        np.array([mult, mult, -mult if mult > -32768 else 32767, 1]),
        np.array([bias, -bias, bias // 3, bias]),
        np.full(4, shift),
        relu=False,
    )
    assert lib.plan(spec).mode == "int32"
    rng = np.random.default_rng(shift)
    x = np.concatenate(
        [
            np.full((1, 1, 1, fan_in), -32768),
            np.full((1, 1, 1, fan_in), 32767),
            rng.integers(-32768, 32768, (1, 1, 1, fan_in)),
        ]
    ).astype(np.int16)
    np.testing.assert_array_equal(native.conv_layer(x, spec, lib), ops.conv_layer(x, spec))


def _harness_networks(records) -> bytes:
    """The harness's --net input (see tests/native_harness.c): (engine, x_q, threads)."""
    from pynq_nbq.native.network import _describe

    parts = []
    for engine, x, threads in records:
        chain = [(s.layer, s.spec) for s in engine.steps]
        desc, _, plans, _ = _describe(
            chain, engine.input_name, engine.output_name, native.library()
        )
        parts.append(np.array([len(desc), len(x), threads], np.int64))
        specs = iter(s.spec for s in engine.steps if s.spec is not None)
        plans = iter(plans)
        for d in desc:
            parts.append(d.astype(np.int64))
            if d[0] == 0:  # conv: rows for the harness to pack, then the requantisation
                spec, plan = next(specs), next(plans)
                parts.append(native.layer_rows(spec)[1].astype(np.int16))
                parts += [plan.mult, plan.offset, plan.shift]
        parts.append(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.int16))
    return b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


@cross_builds
def test_cross_whole_network_is_exact_under_qemu(cross, tmp_path):
    """Each board build runs whole networks (1-3 threads, shared and whole images; random
    chains and the two shipped Fashion-MNIST models) equal to the numpy engine, under
    qemu-user."""
    if cross.missing():
        pytest.skip(cross.missing())
    exe = cross.harness(tmp_path)
    records, want = [], []
    for i, (datapath, n_bits, width, gap_frac) in enumerate(
        [("svpe", 3, 40, 12), ("vpe", 16, 20, 4), ("svpe", 1, 6, None)]
    ):
        bundle = _chain_bundle(tmp_path / str(i), datapath, n_bits, i, width, gap_frac)
        engine = Engine(bundle, "numpy")
        x = _batch(engine, 5, seed=i)
        for threads in (1, 2, 3):
            for n in (1, 2, 5):
                records.append((engine, x[:n], threads))
                want.append(engine.run(x[:n]))
    for name in ("fmnist-svpe", "fmnist-vpe"):  # the shipped models, 2 threads, 3 images
        engine = api.load_model(name, "numpy").engine
        x = _batch(engine, 3, seed=5)
        records.append((engine, x, 2))
        want.append(engine.run(x))
    (tmp_path / "in").write_bytes(_harness_networks(records))
    assert cross.isa in cross.run(exe, "--net", str(tmp_path / "in"), str(tmp_path / "out"))
    got = np.frombuffer((tmp_path / "out").read_bytes(), np.int16)
    assert got.size == sum(w.size for w in want)
    offset = 0
    for w in want:
        np.testing.assert_array_equal(got[offset : offset + w.size].reshape(w.shape), w)
        offset += w.size
