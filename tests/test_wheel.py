"""The wheel runs what it advertises, outside the source tree.

Builds an sdist from a copy of the checkout and the wheel from that sdist, as PyPI would
(no build isolation: no network), installs it
into a fresh virtual environment that sees the test run's own environment (numpy, Pillow,
Flask, hls4ml's ap_int headers: see ``outer_site_pth``; the package itself must come from
the wheel) and runs ``nbq classify`` (numpy, csim, native) and ``nbq info`` from an empty
directory.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".venv",
    "runs",
    "bench_runs",
    ".pytest_cache",
    ".ruff_cache",
    "*.so",
    "*.o",
    "hls_src",
)


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def outer_site_pth() -> str:
    """A ``.pth`` file's text that gives a venv this test run's site directories, after its own.

    Not ``venv --system-site-packages``: from inside a venv (the README's setup), that flag
    gives the new venv the *base* interpreter's site-packages, not the outer venv's, and the
    dependencies (Pillow, Flask, hls4ml, ...) are in the outer venv.  Each line runs
    ``site.addsitedir``, as Python does for its own site directories: the outer ``.pth``
    files (and so editable installs) work, and the directories come after the venv's own
    site-packages, so the ``pynq_nbq`` installed there from the wheel is the one imported.
    Works the same outside any venv, in a venv with or without system site-packages, and
    with a user site directory.
    """
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin dir, env, an empty working directory) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NBQ_HLS_DIR")}
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    dist = tmp / "dist"
    # the PyPI path: an sdist (MANIFEST.in), then the wheel built from that sdist
    sdist_cmd = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-x", "--outdir"]
    run([*sdist_cmd, str(dist), str(src)], cwd=tmp, env=env)
    (sdist,) = dist.glob("pynq[-_]nbq-*.tar.gz")  # setuptools < 69 keeps the dash
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    run([*wheel_cmd, "-w", str(dist), str(sdist)], cwd=tmp, env=env)
    (wheel,) = dist.glob("pynq_nbq-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    bindir = venv / "bin"
    python = bindir / "python"
    venv_site = run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], tmp, env)
    (Path(venv_site.strip()) / "_nbq_test_outer_env.pth").write_text(outer_site_pth())
    # --ignore-installed: a pynq-nbq already in the system site-packages must not count
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        cwd=tmp,
        env=env,
    )
    work = tmp / "elsewhere"
    work.mkdir()
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return {"wheel": wheel, "python": python, "bin": bindir, "env": env, "cwd": work, "venv": venv}


def test_wheel_carries_the_hls_sources(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    hls = sorted(n.removeprefix("pynq_nbq/hls_src/") for n in names if "/hls_src/" in n)
    checkout = sorted(
        str(p.relative_to(ROOT / "hls"))
        for p in (ROOT / "hls").rglob("*")
        if p.is_file() and p.suffix in {".h", ".cpp"} and "build" not in p.parts
    )
    assert checkout and set(checkout) <= set(hls)
    assert not any(n.endswith((".so", ".o", ".bit")) for n in names)


def test_package_comes_from_the_wheel(installed):
    code = (
        "import json, pynq_nbq; from pynq_nbq.backends import csim; "
        "print(json.dumps([pynq_nbq.__file__, str(csim.hls_dir())]))"
    )
    out = run([str(installed["python"]), "-c", code], installed["cwd"], installed["env"])
    module, hls_dir = json.loads(out)
    venv = str(installed["venv"])
    assert module.startswith(venv), module
    assert hls_dir.startswith(venv) and hls_dir.endswith("pynq_nbq/hls_src"), hls_dir


def samples(installed) -> list[str]:
    code = "import pynq_nbq, pathlib; print(pathlib.Path(pynq_nbq.__file__).parent / 'samples')"
    out = run([str(installed["python"]), "-c", code], installed["cwd"], installed["env"])
    d = Path(out.strip())
    return [str(p) for p in sorted(d.glob("*.png"))[:3]]


def classify(installed, backend: str, images: list[str]) -> dict:
    nbq = str(installed["bin"] / "nbq")
    cmd = [nbq, "classify", "--backend", backend, "--top", "3", "--json", *images]
    return json.loads(run(cmd, installed["cwd"], installed["env"]))


@pytest.mark.parametrize("backend", ["numpy", "csim", "native"])
def test_nbq_classify_from_the_wheel(installed, backend):
    """Each backend, from the wheel, gives the checkout's labels and confidences (native:
    built from the wheel's pynq_nbq/native/nbq_native.c)."""
    from pynq_nbq import api

    images = samples(installed)
    got = classify(installed, backend, images)
    assert got["backend"] == backend and str(installed["venv"]) in got["model"]
    if backend == "csim":  # it names the sources it builds from: the wheel's, not hls/
        assert f"{installed['venv']}/" in got["engine"] and "hls_src/nbq_conv.cpp" in got["engine"]
    assert [r["image"] for r in got["results"]] == images
    want = api.load_model().classify(images)
    assert [r["label"] for r in got["results"]] == list(want.labels)
    for i, r in enumerate(got["results"]):
        assert r["top"] == [[lab, pytest.approx(p)] for lab, p in want.top_k(i, 3)]


def test_nbq_info_from_the_wheel(installed):
    out = run([str(installed["bin"] / "nbq"), "info", "--json"], installed["cwd"], installed["env"])
    info = json.loads(out)
    assert info["name"] and info["datapath"] in ("svpe", "vpe")
    assert str(installed["venv"]) in info["path"]
