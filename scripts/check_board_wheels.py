"""Check that ``pip install pynq-nbq`` on a PYNQ image keeps the image's packages and needs
nothing built from source.

For each PYNQ image in :data:`IMAGES` (its Python and the versions it ships):

1. every base requirement of ``setup.py`` (``BASE``) is compared with the image's version of
   that package: "kept" when the image's version satisfies it (pip leaves it alone),
   "REINSTALLED" when it does not (a failure), "from pip" when the image lacks the package;
2. ``pip download --only-binary=:all: --platform manylinux2014_aarch64 --python-version X``
   resolves the requirements, with the image's versions as constraints, to wheels only
   (every transitive dependency included): any package without an aarch64 / pure-Python
   wheel for that Python makes pip fail, and so this check.

Needs network access to PyPI (not run by the test suite).  Prints a Markdown table; the
result of a run is in docs/board.md.  Exit status 1 when a check fails.

    python3 scripts/check_board_wheels.py            # both images
    python3 scripts/check_board_wheels.py --image v3.0.1
    python3 scripts/check_board_wheels.py --image v3.0.1 --test-with python3.10   # + tests
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent

#: What each PYNQ image ships (aarch64 images for Zynq UltraScale+ boards; Ubuntu 22.04).
#: Sources: Xilinx/PYNQ at the tag, sdbuild/ubuntu/jammy/aarch64/multistrap.config
#: (python3-pil, and python3-numpy as a dependency of python3-scipy/-matplotlib: Ubuntu
#: 22.04's 1.21.5 and 9.0.1) and sdbuild/packages/python_packages_jammy/requirements.txt
#: (pip-installed into /usr/local/share/pynq-venv: Flask, Werkzeug, prometheus-client).
#: Both images install the same versions of these (Ubuntu 22.04 + the same pip pins).
JAMMY_PACKAGES = {
    "numpy": "1.21.5",
    "pillow": "9.0.1",
    "flask": "2.1.3",
    "werkzeug": "2.2.1",
    "itsdangerous": "2.1.2",
    "markupsafe": "2.1.1",
}
IMAGES = {
    "v3.0.1": {"python": "3.10", "pynq": "3.0.1", "packages": JAMMY_PACKAGES},
    "v3.1": {"python": "3.10", "pynq": "3.1", "packages": JAMMY_PACKAGES},
}
PLATFORM = "manylinux2014_aarch64"


def base_requirements(setup_py: Path = ROOT / "setup.py") -> list[Requirement]:
    """The ``BASE = [...]`` list of setup.py, read without running setup()."""
    for node in ast.parse(setup_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "BASE" for t in node.targets
        ):
            return [Requirement(r) for r in ast.literal_eval(node.value)]
    raise SystemExit(f"no BASE = [...] list in {setup_py}")


def keep_or_reinstall(reqs: list[Requirement], shipped: dict[str, str]) -> list[tuple]:
    """(requirement, image version or '-', verdict) per base requirement."""
    rows = []
    for r in reqs:
        have = shipped.get(canonicalize_name(r.name))
        if have is None:
            rows.append((str(r), "-", "from pip"))
        elif r.specifier.contains(have, prereleases=True):
            rows.append((str(r), have, "kept"))
        else:
            rows.append((str(r), have, "REINSTALLED"))
    return rows


def resolve_wheels(reqs: list[Requirement], image: dict, dest: Path) -> tuple[bool, str, list]:
    """``pip download`` for the image's platform; (ok, pip's stderr tail, [(name, ver, tag)])."""
    constraints = dest / "image-constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in image["packages"].items()))
    py = image["python"].replace(".", "")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
        "--only-binary=:all:", "--platform", PLATFORM, "--python-version", image["python"],
        "--implementation", "cp", "--abi", f"cp{py}", "--constraint", str(constraints),
        *(str(r) for r in reqs),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = []
    for f in sorted(dest.glob("*.whl")):
        name, version, _, tags = parse_wheel_filename(f.name)
        tag = sorted({f"{t.interpreter}-{t.abi}-{t.platform}" for t in tags})[0]
        wheels.append((str(name), str(version), re.sub(r"manylinux_2_\d+_", "manylinux_", tag)))
    return proc.returncode == 0, proc.stderr.strip()[-600:], wheels


#: Tests that need neither torch nor g++: what a board install runs (the board subset).
BOARD_TESTS = (
    "test_bundle.py", "test_datapath.py", "test_engine_exact.py", "test_engine_threads.py",
    "test_layers.py", "test_perfmodel.py", "test_preprocess.py", "test_server.py",
    "test_server_load.py", "test_streams.py",
)  # fmt: skip
#: What the board subset needs besides the package's own requirements.
TEST_TOOLS = ("pytest", "hypothesis", "prometheus-client")


def run_board_tests(image: dict, python: str, workdir: Path) -> int:
    """The board subset of the tests with the image's package versions, on ``python``
    (which must be the image's Python version, e.g. a python3.10 on this host): a fresh
    venv gets the image's pins plus the remaining requirements and TEST_TOOLS from PyPI,
    then pytest runs this checkout (PYTHONPATH) on :data:`BOARD_TESTS`.  Returns pytest's
    exit status."""
    venv = workdir / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    pins = [f"{n}=={v}" for n, v in image["packages"].items()]
    shipped = image["packages"]
    rest = [str(r) for r in base_requirements() if canonicalize_name(r.name) not in shipped]
    subprocess.run([vpy, "-m", "pip", "install", "-q", *pins, *rest, *TEST_TOOLS], check=True)
    tests = [str(ROOT / "tests" / t) for t in BOARD_TESTS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", choices=sorted(IMAGES), action="append")
    parser.add_argument(
        "--test-with",
        metavar="PYTHON",
        help="also run the board subset of the tests with the image's package versions, "
        "in a venv of this interpreter (the image's Python version, e.g. python3.10)",
    )
    args = parser.parse_args(argv)
    reqs = base_requirements()
    failed = False
    for tag in args.image or sorted(IMAGES):
        image = IMAGES[tag]
        print(f"\n### PYNQ image {tag} (pynq {image['pynq']}, Python {image['python']}, aarch64)\n")
        print("| requirement | image has | pip |\n|---|---|---|")
        for req, have, verdict in keep_or_reinstall(reqs, image["packages"]):
            failed |= verdict == "REINSTALLED"
            print(f"| `{req}` | {have} | {verdict} |")
        with tempfile.TemporaryDirectory() as tmp:
            ok, err, wheels = resolve_wheels(reqs, image, Path(tmp))
        failed |= not ok
        print(
            f"\n`pip download --only-binary=:all: --platform {PLATFORM} "
            f"--python-version {image['python']}`: {'resolved' if ok else 'FAILED'}\n"
        )
        if not ok:
            print("```\n" + err + "\n```")
        print("| wheel | version | tag |\n|---|---|---|")
        for name, version, wtag in wheels:
            print(f"| {name} | {version} | {wtag} |")
        if args.test_with:
            with tempfile.TemporaryDirectory() as tmp:
                status = run_board_tests(image, args.test_with, Path(tmp))
            print(f"\nboard subset of the tests with {tag}'s versions: exit status {status}")
            failed |= status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
