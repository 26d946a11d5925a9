"""Keep hls/ synthesisable, without Vitis HLS: guard what it would reject.

* the kernel compiles as C++14 with ``-Werror=vla`` and no warning in our sources;
* its object file (with a declaration-only ``hls::stream``, so that Xilinx's csim
  queue is not linked in) allocates nothing on the heap, throws nothing and uses
  no STL container (``nm``);
* every loop whose bound is a run-time value carries ``#pragma HLS LOOP_TRIPCOUNT``;
  no while/do/goto loops, no recursion, no dynamic memory in the source;
* every top-level port has an INTERFACE pragma; run_hls.tcl targets the ZCU102 at
  200 MHz for both PE kinds and never includes the g++ stand-in headers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from pynq_nbq import streams as S
from pynq_nbq.backends import csim

KERNEL_SOURCES = ("nbq_conv.cpp", "nbq_conv.h", "nbq_params.h")
have_toolchain = (
    shutil.which(os.environ.get("CXX", "g++")) is not None
    and shutil.which("nm") is not None
    and importlib.util.find_spec("hls4ml") is not None
)
needs_toolchain = pytest.mark.skipif(not have_toolchain, reason="needs g++, nm and hls4ml")

STREAM_STUB = """
#ifndef GUARD_HLS_STREAM_H
#define GUARD_HLS_STREAM_H
namespace hls {
template <typename T> class stream {  // declarations only: nothing of csim's queue
 public:
  stream();
  explicit stream(const char* name);
  T read();
  void write(const T& v);
  bool empty();
};
}  // namespace hls
#endif
"""

FORBIDDEN_SYMBOLS = re.compile(
    r"operator new|operator delete|\bmalloc\b|\bcalloc\b|\brealloc\b|\bfree\b|"
    r"__cxa_throw|__cxa_allocate_exception|"
    r"std::(vector|deque|list|forward_list|map|multimap|set|multiset|unordered_\w+|"
    r"basic_string|__cxx11::basic_string|function|shared_ptr|unique_ptr|queue|stack)\b"
)


def _source(name: str) -> str:
    return (S.HLS_DIR / name).read_text()


def _code(text: str) -> str:
    """Source without comments and string literals (pragmas kept)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


@pytest.fixture(scope="module", params=["svpe", "vpe"])
def kernel_object(request, tmp_path_factory):
    pe = request.param
    d = tmp_path_factory.mktemp(f"guard_{pe}")
    (d / "hls_stream.h").write_text(STREAM_STUB)
    src = csim.hls_dir()
    cmd = [
        csim.compiler(), "-std=c++14", "-O0", "-c", "-Wall", "-Wextra", "-Werror=vla",
        "-Wno-unknown-pragmas", "-Wno-unused-label",
        "-I", str(d), "-I", str(src), "-I", str(src / "csim_include"),
        "-isystem", str(csim.ap_include_dir()), f"-DNBQ_PE_KIND=NBQ_PE_{pe.upper()}",
        str(src / "nbq_conv.cpp"), "-o", str(d / "nbq_conv.o"),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    return pe, res, d / "nbq_conv.o"


@needs_toolchain
def test_kernel_compiles_without_vla_or_warnings(kernel_object):
    pe, res, _ = kernel_object
    assert res.returncode == 0, res.stderr
    ours = [
        ln
        for ln in res.stderr.splitlines()
        if re.search(r"hls/[\w/]+\.(h|cpp):\d+", ln) and ("warning" in ln or "error" in ln)
    ]
    assert ours == [], "\n".join(ours)


@needs_toolchain
def test_kernel_object_has_no_heap_exceptions_or_stl(kernel_object):
    pe, res, obj = kernel_object
    assert res.returncode == 0, res.stderr
    symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True, check=True)
    bad = sorted(
        {
            ln.split(None, 1)[-1]
            for ln in symbols.stdout.splitlines()
            if FORBIDDEN_SYMBOLS.search(ln)
        }
    )
    assert bad == [], f"{pe} kernel object references {bad}"
    assert "nbq_conv(" in symbols.stdout


def _loops(code: str):
    """(line number, header, bound expression, following pragma lines) of each for loop."""
    lines = code.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"\bfor\s*\(([^;]*);([^;]*);([^)]*)\)", line)
        if not m:
            continue
        cond = m.group(2)
        bound = re.split(r"<=|<|>=|>|!=", cond, maxsplit=1)[-1].strip()
        pragmas = []
        for nxt in lines[i + 1 :]:
            if nxt.strip().startswith("#pragma"):
                pragmas.append(nxt.strip())
            elif nxt.strip():
                break
        yield i + 1, line.strip(), bound, pragmas


def _constant(expr: str) -> bool:
    """A bound Vitis can count: literals, ALL-CAPS constants/macros, arithmetic."""
    return all(
        re.fullmatch(r"[A-Z][A-Z0-9_]*|\d+", tok) for tok in re.findall(r"[A-Za-z_]\w*|\d+", expr)
    )


def test_every_variable_loop_has_a_tripcount():
    checked = 0
    for name in ("nbq_conv.cpp", "nbq_conv.h"):
        for lineno, header, bound, pragmas in _loops(_code(_source(name))):
            checked += 1
            if _constant(bound):
                continue
            assert any("LOOP_TRIPCOUNT" in p and "max=" in p for p in pragmas), (
                f"hls/{name}:{lineno}: loop with run-time bound {bound!r} has no "
                f"'#pragma HLS LOOP_TRIPCOUNT max=...': {header}"
            )
    assert checked >= 12  # the check found the kernel's loops


def test_tripcount_bounds_are_constants():
    code = _code(_source("nbq_conv.cpp"))
    for m in re.finditer(r"LOOP_TRIPCOUNT\s+min=(\S+)\s+max=(\S+)", code):
        assert _constant(m.group(1)) and _constant(m.group(2)), m.group(0)


def test_no_constructs_vitis_rejects_in_kernel_sources():
    for name in KERNEL_SOURCES:
        code = _code(_source(name))
        for pattern, what in [
            (r"\bwhile\b|\bdo\s*\{", "while/do loops (use bounded for loops)"),
            (r"\bgoto\b", "goto"),
            (r"\bnew\b|\bdelete\b|\bmalloc\b|\bfree\s*\(", "dynamic memory"),
            (r"\bstd::", "the standard library"),
            (r"\bthrow\b|\btry\b", "exceptions"),
            (r"#include\s*<(vector|string|map|list|deque|memory|iostream)>", "STL headers"),
        ]:
            assert not re.search(pattern, code), f"hls/{name} uses {what}"


def test_no_recursion():
    code = _code(_source("nbq_conv.cpp")) + _code(_source("nbq_conv.h"))
    definition = re.compile(r"\n\s*(?:static\s+)?[\w:<>]+[\s*&]+(\w+)\s*\(([^;{]*)\)\s*\{")
    defined = []
    for m in definition.finditer(code):
        name, start = m.group(1), m.end()
        if name in ("if", "for", "while", "switch", "return", "else"):
            continue
        defined.append(name)
        depth, i = 1, start
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        assert not re.search(rf"\b{name}\s*\(", code[start:i]), f"{name} calls itself"
    assert {"nbq_conv", "requantize", "pack", "product"} <= set(defined)


def test_every_port_has_an_interface_pragma():
    code = _code(_source("nbq_conv.h"))
    sig = re.search(r"void\s+nbq_conv\s*\(([^)]*)\)", code).group(1)
    ports = [re.findall(r"\w+", p)[-1] for p in sig.split(",")]
    pragmas = re.findall(r"#pragma HLS INTERFACE mode=(\w+) port=(\w+)", _source("nbq_conv.cpp"))
    modes = dict((port, mode) for mode, port in pragmas if port != "return")
    assert set(modes) == set(ports)
    assert modes["s_in"] == modes["s_out"] == "axis"
    assert {m for p, m in modes.items() if p not in ("s_in", "s_out")} == {"s_axilite"}
    assert ("ap_ctrl_hs", "return") in pragmas and ("s_axilite", "return") in pragmas


def test_run_hls_tcl_targets_the_zcu102_for_both_kinds():
    tcl = _source("run_hls.tcl")
    assert "set part xczu9eg-ffvb1156-2-e" in tcl
    assert "NBQ_PERIOD_NS" in tcl and "pynq_nbq.kernel.design period" in tcl  # design.py
    assert "set kinds {svpe vpe}" in tcl
    for step in ("csim_design", "csynth_design", "export_design -format ip_catalog"):
        assert step in tcl
    assert "-DNBQ_PE_KIND=NBQ_PE_$KIND" in tcl
    assert "csim_include" not in re.sub(r"#[^\n]*", "", tcl)  # only Vitis's own headers


def test_stand_in_header_is_refused_under_vitis():
    text = _source("csim_include/ap_axi_sdata.h")
    assert "#ifdef __SYNTHESIS__\n#error" in text


# --- the streaming structure (issue 11) ----------------------------------------------------
def _body(code: str, start: int) -> str:
    """The brace-balanced block that opens at or after ``start``."""
    i = code.index("{", start)
    depth, j = 1, i + 1
    while depth:
        depth += {"{": 1, "}": -1}.get(code[j], 0)
        j += 1
    return code[i + 1 : j - 1]


def _function(code: str, name: str) -> tuple[str, str]:
    """(parameter list, body) of the function ``name`` defined in ``code``."""
    m = re.search(rf"\n[\w:<> ]*\b{name}\s*\(([^{{;]*)\)\s*\{{", code)
    assert m, f"function {name} not found"
    return m.group(1), _body(code, m.end() - 1)


def _pipelined_loops(code: str):
    """(label, body) of every loop whose first pragma line is PIPELINE."""
    for m in re.finditer(r"(\w+):\s*\n\s*for\s*\([^)]*\)\s*\{", code):
        body = _body(code, m.end() - 1)
        head = [ln.strip() for ln in body.splitlines() if ln.strip()][:3]
        if any(ln.startswith("#pragma HLS PIPELINE") for ln in head):
            yield m.group(1), body


def _partitioned(code: str) -> dict[str, set[int]]:
    """Array name -> partitioned dimensions (0 = all) from ARRAY_PARTITION pragmas."""
    out: dict[str, set[int]] = {}
    for m in re.finditer(r"ARRAY_PARTITION variable=(\w+) complete(?: dim=(\d+))?", code):
        out.setdefault(m.group(1), set()).add(int(m.group(2) or 0))
    return out


def _unrolled_vars(body: str) -> set[str]:
    found = set()
    for m in re.finditer(r"for\s*\(\s*int\s+(\w+)[^)]*\)\s*\{\s*#pragma HLS UNROLL", body):
        found.add(m.group(1))
    return found


def test_no_run_time_indexed_reads_of_partitioned_arrays_in_pipelined_loops():
    """A read of a partitioned array must name its bank statically (literal, constant or
    unrolled loop variable); run-time indices become wide multiplexers."""
    code = _code(_source("nbq_conv.cpp"))
    parts = _partitioned(code)
    assert {"wbuf", "acc"} <= set(parts)
    loops = dict(_pipelined_loops(code))
    assert {"read_fm_loop", "window_loop", "compute_loop", "requant_loop", "pack_loop"} <= set(
        loops
    )
    for label, body in loops.items():
        static = _unrolled_vars(body)
        chain = r"\b(\w+)((?:\s*\[[^\]]+\])+)((?:\.\w+(?:\[[^\]]+\])*)*)(\s*[=!<>]?=?)"
        for m in re.finditer(chain, body):
            name, subs, after = m.group(1), m.group(2), m.group(4).strip()
            if name not in parts or after == "=":  # not partitioned, or a write
                continue
            idx = re.findall(r"\[([^\]]+)\]", subs)
            for dim, expr in enumerate(idx, start=1):
                if 0 not in parts[name] and dim not in parts[name]:
                    continue
                names = set(re.findall(r"[A-Za-z_]\w*", expr))
                ok = all(n in static or re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names)
                assert ok, f"{label}: {name}{subs} reads a partitioned dim with {expr!r}"


def test_no_multiply_on_data_in_the_svpe_pe_path():
    """The SVPE product and the compute loop hold no '*': shifts and adds only."""
    header = _code(_source("nbq_conv.h"))
    svpe = _body(header, header.index("struct pe<NBQ_PE_SVPE>"))
    _, product = _function(svpe, "product")
    assert "<<" in product and "*" not in product, product
    code = _code(_source("nbq_conv.cpp"))
    compute = re.sub(r"#pragma[^\n]*", "", dict(_pipelined_loops(code))["compute_loop"])
    assert "pe_t::product(" in compute and "*" not in compute, compute


def test_every_dataflow_stage_is_a_function_with_stream_arguments():
    code = _code(_source("nbq_conv.cpp"))
    regions = [m.start() for m in re.finditer(r"#pragma HLS DATAFLOW", code)]
    assert len(regions) == 1
    start = code.rfind("\nvoid ", 0, regions[0])
    name = re.match(r"\nvoid\s+(\w+)", code[start:]).group(1)
    _, region = _function(code, name)
    statements = [s.strip() for s in re.sub(r"#pragma[^\n]*", "", region).split(";")]
    statements = [s for s in statements if s]
    calls = [s for s in statements if not s.startswith("hls::stream<")]
    assert all(re.fullmatch(r"\w+\([\w\s,]*\)", s) for s in calls), calls
    stages = [re.match(r"\w+", s).group(0) for s in calls]
    assert stages == ["read_fm", "window", "compute", "requant", "pool", "pack"]
    for stage in [name, *stages]:
        params, body = _function(code, stage)
        if stage != name:
            assert "hls::stream<" in params, f"stage {stage} takes no stream"
        assert not re.search(r"\breturn\b", body), f"{stage} returns early"
    depths = dict(re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\w+)", region))
    declared = re.findall(r"hls::stream<[^;]*>\s+(\w+)\(", region)
    assert declared and set(declared) == set(depths), (declared, depths)


# --- pipelining risks (issue 21): each guard fails on the kernel before it ------------------
def test_pool_row_buffer_is_never_read_and_written_in_one_iteration():
    """prow is written on even rows and read on odd rows only (the old pool loop read,
    maxed and wrote prow[addr] every iteration: II=2 when consecutive iterations hit the
    same address, i.e. with one output group)."""
    code = _code(_source("nbq_conv.cpp"))
    _, body = _function(code, "pool")
    at = body.index("if (cr % 2 == 0)")
    even = _body(body, at)
    rest = body[body.index("{", at) + len(even) + 2 :]  # after the even branch's "}"
    assert rest.lstrip().startswith("else"), "the odd row is the else branch"
    odd = _body(rest, 0)
    write = re.compile(r"\bprow\[[^\]]+\]\s*=[^=]")
    read = re.compile(r"\bprow\[")
    assert write.search(even) and not read.search(write.sub("", even))  # even: write only
    assert read.search(odd) and not write.search(odd)  # odd: read only
    outside = body.replace(even, "").replace(odd, "")
    uses = re.findall(r"[^\n]*\bprow\[[^\n]*", outside)
    assert uses == [uses[0]] and "static outs_t prow[" in uses[0], uses  # the declaration


def test_weight_loader_is_one_flat_loop_writing_whole_words():
    """One pipelined loop over the packet's words with a trip count computed before it,
    and whole weight vectors written (the old loader nested three run-time loops and
    wrote one field of an aggregated word: a read-modify-write)."""
    code = _code(_source("nbq_conv.cpp"))
    _, body = _function(code, "load_weights")
    loops = re.findall(r"for\s*\([^)]*\)\s*\{(\s*#pragma HLS \w+)?", body)
    kinds = [(p or "").split()[-1] if p else "" for p in loops]
    assert kinds.count("LOOP_TRIPCOUNT") == 2, kinds  # the weight words, the requant words
    assert all(k in ("LOOP_TRIPCOUNT", "UNROLL") for k in kinds), kinds
    (flat,) = re.findall(r"load_w:\s*\n\s*for\s*\(int (\w+) = 0; \1 < (\w+);", body)
    assert re.search(rf"const int {flat[1]} = [^;]+;", body), "trip count computed first"
    assert not re.search(r"wbuf(\[[^\]]+\])+\.w\[[^\]]+\]\s*=[^=]", body), "one-field write"
    assert re.search(r"wbuf(\[[^\]]+\]){3}\s*=\s*\w+;", body), "whole-vector write"


def _structs(code: str) -> dict[str, str]:
    return {m.group(1): _body(code, m.end() - 1) for m in re.finditer(r"struct (\w+) \{", code)}


def test_aggregate_only_on_flat_structs():
    """Every AGGREGATE'd variable's type holds scalars or arrays of scalars, no struct
    (UG1399: AGGREGATE on a struct of structs is not supported; win_t held 9 vec_t)."""
    code = _code(_source("nbq_conv.cpp"))
    structs = _structs(code)
    assert {"vec_t", "win_t", "wvec_t", "accs_t", "outs_t"} <= set(structs)
    names = re.findall(r"#pragma HLS AGGREGATE variable=(\w+)", code)
    assert {"inbuf", "lb0", "hist", "prow", "wbuf"} <= set(names)
    for name in names:
        m = re.search(rf"\b(\w+)\s+{name}\s*\[", code)
        assert m, name
        members = structs[m.group(1)]
        inner = [s for s in structs if re.search(rf"\b{s}\b", members)]
        assert inner == [], f"{name}: {m.group(1)} holds structs {inner}"


def test_ram_reads_after_writes_have_a_declared_distance_and_a_bypass():
    """hist, inbuf, prow and pend are RAMs read again a run-time number of iterations
    after the write: each carries DEPENDENCE ... RAW distance=2 (a read whose value is used
    is >= 2 iterations after its write), and the distance-1 case is bypassed through a
    register (one input group for hist/inbuf, one output group for pend)."""
    code = _code(_source("nbq_conv.cpp"))
    dist = dict(re.findall(r"DEPENDENCE variable=(\w+) inter RAW distance=(\d+) true", code))
    for name in ("hist", "inbuf", "prow", "pend"):
        assert int(dist.get(name, 0)) >= 2, name
    _, window = _function(code, "window")
    assert "g.mg == 1" in window and "hreg" in window
    _, compute = _function(code, "compute")
    assert re.search(r"else if \(g\.mg > 1\)\s*\{\s*win = inbuf\[mgi\];", compute)
    _, pool = _function(code, "pool")
    assert "g.cg == 1 ? even : pend[cgi]" in pool


def test_storage_bindings_are_the_cost_models():
    """Every BIND_STORAGE of the kernel is in the cost model's table (perfmodel.kernel
    STORAGE) with the same type and impl, and the other way round; each buffer is counted
    once, as LUTRAM LUTs or as BRAM18; a block RAM read again after its write (hist,
    inbuf, prow: the distance-2 argument) pins read latency 1."""
    from pynq_nbq.perfmodel import kernel

    code = _code(_source("nbq_conv.cpp"))
    code = _check_uram_switches(code)  # the switchable buffers, then the fixed ones
    code = _check_lutram_switches(code)  # each small RAM's block-RAM branch kept
    found = re.findall(r"#pragma HLS BIND_STORAGE variable=(\w+) type=(\w+) impl=(\w+)(.*)", code)
    bound = {name: (kind, impl) for name, kind, impl, _ in found}
    assert len(bound) == len(found), "a variable bound twice"
    assert bound == kernel.STORAGE
    rest = {name: tail for name, _, impl, tail in found if impl == "bram"}
    for name, tail in rest.items():
        assert "latency=1" in tail, name
    lut = kernel.infrastructure_lut("svpe", 32, 8)
    bram = kernel.buffers_bram18("svpe3", 32, 8)
    for name, (_, impl) in kernel.STORAGE.items():
        assert (f"{name}_lutram" in lut) == (impl == "lutram"), name
        assert (name in bram) == (impl == "bram"), name
        assert (lut.get(f"{name}_lutram") or bram.get(name)) > 0, name


def _check_uram_switches(code: str) -> str:
    """Each ``#if NBQ_URAM_<X>`` block binds its variables impl=uram and its ``#else``
    impl=bram, as perfmodel.kernel.URAM_SWITCHES and kernel.builds.URAM_MACROS say;
    returns the code without those blocks."""
    from pynq_nbq.kernel.builds import URAM_MACROS
    from pynq_nbq.perfmodel import kernel

    pattern = r"#if (NBQ_URAM_\w+)\n(.*?)#else\n(.*?)#endif"
    blocks = re.findall(pattern, code, flags=re.S)
    seen = {}
    for macro, on, off in blocks:
        names = []
        for branch, impl in ((on, "uram"), (off, "bram")):
            pragmas = re.findall(
                r"#pragma HLS BIND_STORAGE variable=(\w+) type=(\w+) impl=(\w+)", branch
            )
            assert pragmas and {p[2] for p in pragmas} == {impl}, (macro, pragmas)
            assert {p[1] for p in pragmas} == {"ram_2p"}, (macro, pragmas)
            names.append(tuple(sorted(p[0] for p in pragmas)))
        assert names[0] == names[1], macro
        seen[macro] = names[0]
    want = {m: tuple(sorted(v)) for m, v in kernel.URAM_SWITCHES.values()}
    assert seen == want
    assert {k: m for k, (m, _v) in kernel.URAM_SWITCHES.items()} == URAM_MACROS
    header = S.parse_params_header()
    assert all(header[m] == 0 for m in want)  # block RAM unless a build says otherwise
    return re.sub(pattern, "", code, flags=re.S)


def _check_lutram_switches(code: str) -> str:
    """Each ``#if NBQ_LUTRAM_<X>`` block binds one small RAM ``impl=lutram latency=1`` and
    its ``#else`` the same RAM ``impl=bram latency=1`` (read latency 1 either way, which
    the RAM's declared dependence distance relies on), as perfmodel.storage.LUTRAM_SWITCHES
    (= kernel.builds.LUTRAM_MACROS) says, and the header's default is block RAM; returns
    the code with each block replaced by its ``#else`` branch (the default binding)."""
    from pynq_nbq.perfmodel import storage

    pattern = r"#if (NBQ_LUTRAM_\w+)\n(.*?)#else\n(.*?)#endif\n"
    seen = {}
    for macro, on, off in re.findall(pattern, code, flags=re.S):
        got = []
        for branch, impl in ((on, "lutram"), (off, "bram")):
            pragmas = re.findall(
                r"#pragma HLS BIND_STORAGE variable=(\w+) type=(\w+) impl=(\w+)(.*)", branch
            )
            assert len(pragmas) == 1, (macro, pragmas)
            name, kind, how, tail = pragmas[0]
            assert (kind, how) == ("ram_2p", impl), (macro, pragmas)
            assert tail.split() == ["latency=1"], (macro, tail)
            got.append(name)
        assert got[0] == got[1], macro
        seen[got[0]] = macro
    assert seen == storage.LUTRAM_SWITCHES
    assert all(storage.STORAGE[name] == ("ram_2p", "bram") for name in seen)
    header = S.parse_params_header()
    assert all(header[m] == 0 for m in seen.values())  # block RAM unless a build says so
    return re.sub(pattern, lambda m: m.group(3), code, flags=re.S)


def test_fifo_depths_are_named_constants_derived_in_the_header():
    """STREAM depths are the header's NBQ_*_DEPTH (no literal guessed in the region), and
    px holds two pixels of channel groups (the old depth 4 could not absorb the compute
    stage's burst of MG windows; the dataflow simulation sizes it, test_perf_dataflow)."""
    code = _code(_source("nbq_conv.cpp"))
    depths = dict(re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\w+)", code))
    for fifo in ("px", "wins", "accs", "outs", "pooled"):
        assert depths[fifo] == f"NBQ_{fifo.upper()}_DEPTH", (fifo, depths[fifo])
    header = S.parse_params_header()
    mg = -(-header["NBQ_MAX_CIN"] // header["NBQ_PM"])
    assert header["NBQ_PX_DEPTH"] == 2 * mg + 2 >= 4
    params = _source("nbq_params.h")
    assert "#define NBQ_PX_DEPTH (2 * ((NBQ_MAX_CIN + NBQ_PM - 1) / NBQ_PM) + 2)" in params
