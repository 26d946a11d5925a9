"""Offline half of scripts/check_board_wheels.py: every board has an image, the base
requirements keep every binary package each image ships (pip must not reinstall the
image's numpy, Pillow or Flask), the board install pulls neither pynq (its 3.1/4.0 releases
pin grpcio==1.64.0, with no aarch64 wheel) nor torch, and the resolution step classifies
what pip would do (kept / pure-Python wheel / binary wheel / needs a compiler) on a local
index standing in for PyPI (``pip download --no-index``: no network)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import check_board_wheels as cbw

ROOT = Path(__file__).resolve().parent.parent
BOARD_FILES = sorted(p.stem for p in (ROOT / "pynq_nbq" / "boards").glob("*.json"))


def test_every_board_has_an_image_and_every_fact_a_source():
    assert sorted(cbw.BOARD_IMAGES) == BOARD_FILES, (
        "every pynq_nbq/boards/*.json needs its image(s) in BOARD_IMAGES of "
        "scripts/check_board_wheels.py"
    )
    for tags in cbw.BOARD_IMAGES.values():
        assert tags and all(t in cbw.IMAGES for t in tags)
    for image in cbw.IMAGES.values():
        assert set(image.sources) <= set(cbw.SOURCES)
        assert {src for _, src in image.packages.values()} <= set(cbw.SOURCES)
        assert image.python == "3.10"  # every PYNQ 3.x image is Ubuntu 22.04
    assert cbw.IMAGES[cbw.BOARD_IMAGES["pynq-z2"][0]].arch == "armv7l"
    assert {cbw.IMAGES[cbw.BOARD_IMAGES[b][0]].arch for b in ("zcu102", "zcu104", "kv260")} == {
        "aarch64"
    }


def test_pip_platform_tags_follow_the_image():
    tags = cbw.IMAGES["v3.0.1-pynq-z2"].platforms()
    assert tags[0] == "manylinux_2_35_armv7l" and tags[-1] == "linux_armv7l"
    assert "manylinux2014_armv7l" in tags and not any("aarch64" in t for t in tags)
    assert "manylinux2014_aarch64" in cbw.IMAGES["kria-pynq"].platforms()


@pytest.mark.parametrize("image", sorted(cbw.IMAGES))
def test_base_requirements_keep_the_image_packages(image):
    rows = cbw.keep_or_fetch(cbw.base_requirements(), cbw.IMAGES[image])
    verdicts = {req.split(">")[0].split("=")[0]: verdict for req, _, verdict in rows}
    shipped = {n for n in ("numpy", "pillow", "flask") if cbw.IMAGES[image].version(n)}
    assert shipped >= {"numpy", "flask"}
    assert all(verdicts[n] == "kept" for n in shipped), rows


def test_a_too_new_bound_is_reported():
    reqs = [cbw.Requirement("numpy>=1.22"), cbw.Requirement("waitress")]
    rows = cbw.keep_or_fetch(reqs, cbw.IMAGES["v3.0.1"])
    assert [v for _, _, v in rows] == ["replaces 1.21.5", "from pip"]
    assert "numpy" not in cbw.kept_packages(reqs, cbw.IMAGES["v3.0.1"])


def test_no_extra_a_board_installs_pulls_pynq_or_torch():
    tree = ast.parse((ROOT / "setup.py").read_text())
    setup_call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    )
    extras = next(k.value for k in setup_call.keywords if k.arg == "extras_require")
    board = next(v for k, v in zip(extras.keys, extras.values) if k.value == "board")
    assert isinstance(board, ast.List) and board.elts == []
    names = {r.name.lower() for r in cbw.base_requirements()}
    assert not names & {"pynq", *cbw.NEVER}


def test_the_package_imports_without_torch():
    """Every module of pynq_nbq imports with torch unavailable (as on a board)."""
    code = (
        "import sys, importlib, pkgutil; sys.modules['torch'] = None; import pynq_nbq\n"
        "for m in pkgutil.walk_packages(pynq_nbq.__path__, 'pynq_nbq.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]


def test_classify_names_what_pip_does():
    kept = {"numpy": "1.21.5"}
    assert cbw.classify("numpy-1.21.5-py3-none-any.whl", kept)[2] == "kept (the image's)"
    assert cbw.classify("waitress-3.0.2-py3-none-any.whl", kept)[2] == "pure-Python wheel"
    what = cbw.classify("numpy-1.26.4-cp310-cp310-manylinux_2_17_aarch64.whl", kept)[2]
    assert what == "binary wheel cp310-cp310-manylinux_aarch64"


@pytest.fixture
def local_index(tmp_path):
    """A folder standing in for PyPI: a pure-Python package, a compiled one with x86-64
    and aarch64 wheels only, and a numpy newer than the images' (x86-64 wheel only)."""
    index = tmp_path / "index"
    index.mkdir()
    cbw.write_stub_wheel(index, "purepkg", "1.0", requires=("fastpkg>=1",))
    for platform in ("manylinux2014_x86_64", "manylinux2014_aarch64"):
        cbw.write_stub_wheel(index, "fastpkg", "1.0", f"cp310-cp310-{platform}")
    cbw.write_stub_wheel(index, "numpy", "1.22.0", "cp310-cp310-manylinux2014_x86_64")
    return ("--no-index", "--find-links", str(index))


def test_resolution_on_aarch64_and_armv7l(local_index, tmp_path):
    """pip's resolver, offline: a compiled dependency is a binary wheel on aarch64 and
    needs a compiler on armv7l; the image's numpy is kept; asking for a newer numpy
    than the PYNQ-Z2 image's needs a compiler there (no armv7l wheel)."""
    reqs = [cbw.Requirement("purepkg"), cbw.Requirement("numpy>=1.21")]
    got = cbw.resolve(reqs, cbw.IMAGES["v3.0.1"], tmp_path / "a", local_index)
    assert got.ok, got.problems
    what = {name: w for name, _, w in got.wheels}
    assert what == {
        "purepkg": "pure-Python wheel",
        "fastpkg": "binary wheel cp310-cp310-manylinux2014_aarch64",
        "numpy": "kept (the image's)",
    }
    z2 = cbw.IMAGES["v3.0.1-pynq-z2"]
    got = cbw.resolve(reqs, z2, tmp_path / "b", local_index)
    assert not got.ok
    assert got.problems == ["needs a compiler: PyPI has binary wheels of fastpkg, none for armv7l"]
    got = cbw.resolve([cbw.Requirement("numpy>=1.22")], z2, tmp_path / "c", local_index)
    assert got.problems == ["needs a compiler: PyPI has binary wheels of numpy, none for armv7l"]


def test_board_doc_states_the_recorded_image_facts():
    """docs/board.md's image table quotes IMAGES (the one place the facts live)."""
    rows = [
        line
        for line in (ROOT / "docs" / "board.md").read_text().splitlines()
        if line.startswith("| `") and "| source" not in line
    ]
    seen = set()
    for row in rows:
        first = row.split("|")[1]
        for tag in (t for t in cbw.IMAGES if f"`{t}`" in first):
            seen.add(tag)
            image = cbw.IMAGES[tag]
            for name in ("numpy", "flask", "werkzeug", "prometheus-client"):
                assert image.version(name) in row, (tag, name, row)
            assert (image.version("pillow") or "not installed") in row, (tag, row)
    assert seen == set(cbw.IMAGES)
