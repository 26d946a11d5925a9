"""Check that ``pip install pynq-nbq`` on each board's PYNQ image keeps the image's packages and
needs no compiler.

The facts about each image (:data:`IMAGES`: Python, CPU architecture, glibc, the versions of
the packages it ships, each with its source in :data:`SOURCES`) and which board runs which
image (:data:`BOARD_IMAGES`, one entry per ``pynq_nbq/boards/*.json``) live here, in one place.
For each image:

1. every base requirement of ``setup.py`` (``BASE``) is compared with the image's version of
   that package: "kept" when the image's version satisfies it (pip leaves it alone);
   otherwise pip fetches it ("from pip"; "replaces X" when the image has an older X);
2. the requirements are resolved by pip's own resolver for the image's platform
   (``pip download --only-binary=:all: --platform <the image's tags> --python-version X``)
   with the image's packages standing in as already installed (a stub wheel of the image's
   version and a constraint, for each package the image keeps), so that only what pip would
   really fetch is fetched.  Every fetched wheel is named: a pure-Python wheel
   (``py3-none-any``) or a binary wheel for the platform.  A package with no wheel for the
   platform fails the resolution: pip would build its sdist on the board, which needs a
   compiler when PyPI has binary wheels of it for other platforms (most packages on armv7l:
   PyPI has few armv7l wheels, and piwheels builds only for Raspberry Pi OS's Python).

Fails (exit 1) when pip would need a compiler, would replace a binary package of the image
(numpy's ABI is shared with the image's compiled packages), or would pull torch.  Upgrading
a pure-Python package of the image is reported, not failed.  Needs network access to PyPI
(not run by the test suite; ``tests/test_board_install.py`` checks the offline half).
Prints Markdown; the result of a run is in docs/board.md.

    python3 scripts/check_board_wheels.py                      # every image
    python3 scripts/check_board_wheels.py --board pynq-z2      # that board's image(s)
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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent

#: Where each fact of IMAGES comes from (cited by key).
SOURCES = {
    "jammy": "Ubuntu 22.04 (jammy) archive, the same versions on arm64 and armhf: "
    "python3 3.10 (python3.10 3.10.x), libc6 2.35, python3-numpy 1:1.21.5, "
    "python3-pil 9.0.1 (packages.ubuntu.com/jammy)",
    "pynq-multistrap": "Xilinx/PYNQ at the tag, sdbuild/ubuntu/jammy/{aarch64,arm}/"
    "multistrap.config: Ubuntu's python3-pil, and python3-numpy as a dependency of "
    "python3-scipy / python3-matplotlib",
    "pynq-venv": "Xilinx/PYNQ at the tag (v3.0.1, v3.1 alike), sdbuild/packages/"
    "python_packages_jammy/requirements.txt, pip-installed by its qemu.sh into "
    "/usr/local/share/pynq-venv (python3 -m venv --system-site-packages) on every board's "
    "image, armhf included (pre-built/: wheels built in the chroot, e.g. for armhf)",
    "pynq-arch": "Xilinx/PYNQ v3.0.1 boards/ZCU104/ZCU104.spec ARCH_ZCU104 := aarch64, "
    "boards/Pynq-Z2/Pynq-Z2.spec ARCH_Pynq-Z2 := arm (sdbuild/ubuntu/jammy/arm: "
    "arch=armhf; platform.machine() 'armv7l')",
    "kria-install": "Xilinx/Kria-PYNQ master 21bf5e1 (2024-07-03) install.sh: Canonical's "
    "Ubuntu 22.04 for Kria, PYNQ v3.0.1's python_packages_jammy (the same requirements.txt) "
    "into /usr/local/share/pynq-venv, then pip install numpy==1.26.4 (its 'Numpy 2.0 "
    "workaround', Kria-PYNQ issue #44) and pynq==3.0.1",
    "kria-pillow": "neither Kria-PYNQ's install.sh nor PYNQ's requirements.txt installs "
    "Pillow; whether Canonical's Kria image ships python3-pil is not checked: taken as "
    "absent (if it has Ubuntu's 9.0.1, that is kept: pillow>=9.0)",
    "zcu102": "no official PYNQ image for the ZCU102 (docs/board.md): an image built with "
    "PYNQ v3.0.1's sdbuild for it gets the same packages (same multistrap and requirements)",
}


@dataclass(frozen=True)
class Image:
    """One board image: what ``pip`` on it sees.

    Attributes:
        title: the image, as a user would name it.
        pynq: the pynq release the image carries.
        python: its Python version ("3.10").
        arch: ``platform.machine()`` on it ("aarch64", "armv7l").
        glibc: its glibc (major, minor): the manylinux tags its pip accepts.
        packages: name -> (version, SOURCES key) of what the image ships.
        sources: SOURCES keys for python, arch and glibc.
    """

    title: str
    pynq: str
    python: str
    arch: str
    glibc: tuple[int, int]
    packages: dict[str, tuple[str, str]]
    sources: tuple[str, ...] = field(default=("jammy",))

    def platforms(self) -> list[str]:
        """pip's ``--platform`` tags for this image, most specific first (manylinux for
        every glibc up to the image's, the legacy manylinux2014 alias, plain linux_*)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        return [*tags, f"manylinux2014_{self.arch}", f"linux_{self.arch}"]

    def version(self, name: str) -> str | None:
        """The image's version of ``name``, or None if it does not ship it."""
        got = self.packages.get(canonicalize_name(name))
        return got[0] if got else None


#: The PYNQ images' pynq-venv (requirements.txt, pip) and Ubuntu 22.04 (multistrap) packages
#: that the base requirements and their dependencies touch.
PYNQ_PACKAGES = {
    "numpy": ("1.21.5", "pynq-multistrap"),
    "pillow": ("9.0.1", "pynq-multistrap"),
    "flask": ("2.1.3", "pynq-venv"),
    "werkzeug": ("2.2.1", "pynq-venv"),
    "itsdangerous": ("2.1.2", "pynq-venv"),
    "markupsafe": ("2.1.1", "pynq-venv"),
    "prometheus-client": ("0.14.1", "pynq-venv"),
}
KRIA_PACKAGES = {
    **{n: v for n, v in PYNQ_PACKAGES.items() if n != "pillow"},
    "numpy": ("1.26.4", "kria-install"),
}
IMAGES = {
    "v3.0.1": Image(
        "PYNQ 3.0.1 SD image, ZU+ (ZCU104; a self-built ZCU102 image)",
        "3.0.1",
        "3.10",
        "aarch64",
        (2, 35),
        PYNQ_PACKAGES,
        ("jammy", "pynq-arch"),
    ),
    "v3.1": Image(
        "PYNQ 3.1 SD image, ZU+ (ZCU104)",
        "3.1",
        "3.10",
        "aarch64",
        (2, 35),
        PYNQ_PACKAGES,
        ("jammy", "pynq-arch"),
    ),
    "v3.0.1-pynq-z2": Image(
        "PYNQ 3.0.1 SD image for the PYNQ-Z2 (Zynq-7000, 32-bit armhf)",
        "3.0.1",
        "3.10",
        "armv7l",
        (2, 35),
        PYNQ_PACKAGES,
        ("jammy", "pynq-arch"),
    ),
    "kria-pynq": Image(
        "Kria-PYNQ (pynq 3.0.1) on Canonical's Ubuntu 22.04 for Kria (KV260)",
        "3.0.1",
        "3.10",
        "aarch64",
        (2, 35),
        KRIA_PACKAGES,
        ("jammy", "kria-install", "kria-pillow"),
    ),
}
#: Board (pynq_nbq/boards/<name>.json) -> its images, the first the recommended one.
BOARD_IMAGES = {
    "zcu102": ("v3.0.1",),  # self-built: SOURCES["zcu102"]
    "zcu104": ("v3.0.1", "v3.1"),
    "kv260": ("kria-pynq",),
    "pynq-z2": ("v3.0.1-pynq-z2",),
}
#: What a board install must never pull (training only, and no wheel for armv7l).
NEVER = ("torch",)


def base_requirements(setup_py: Path = ROOT / "setup.py") -> list[Requirement]:
    """The ``BASE = [...]`` list of setup.py, read without running setup()."""
    for node in ast.parse(setup_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "BASE" for t in node.targets
        ):
            return [Requirement(r) for r in ast.literal_eval(node.value)]
    raise SystemExit(f"no BASE = [...] list in {setup_py}")


def keep_or_fetch(reqs: list[Requirement], image: Image) -> list[tuple[str, str, str]]:
    """(requirement, image version or '-', verdict) per requirement: "kept" (the image's
    version satisfies it), "from pip" (the image lacks it) or "replaces <version>"."""
    rows = []
    for r in reqs:
        have = image.version(r.name)
        if have is None:
            rows.append((str(r), "-", "from pip"))
        elif r.specifier.contains(have, prereleases=True):
            rows.append((str(r), have, "kept"))
        else:
            rows.append((str(r), have, f"replaces {have}"))
    return rows


def kept_packages(reqs: list[Requirement], image: Image) -> dict[str, str]:
    """The image's packages pip leaves alone: all but those a requirement excludes."""
    out = {name: version for name, (version, _) in image.packages.items()}
    for r in reqs:
        have = out.get(canonicalize_name(r.name))
        if have is not None and not r.specifier.contains(have, prereleases=True):
            del out[canonicalize_name(r.name)]
    return out


def write_stub_wheel(
    folder: Path, name: str, version: str, tag: str = "py3-none-any", requires: tuple = ()
) -> Path:
    """A wheel with no files standing for an installed package (pip picks it for a
    ``name==version`` constraint where PyPI has no wheel for the platform); ``tag`` and
    ``requires`` (Requires-Dist lines) make other stand-ins (tests)."""
    dist = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    path = folder / f"{dist}-{tag}.whl"
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    meta += [f"Requires-Dist: {r}\n" for r in requires]
    wheel = f"Wheel-Version: 1.0\nGenerator: nbq\nRoot-Is-Purelib: true\nTag: {tag}\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", "".join(meta))
        z.writestr(f"{dist}.dist-info/WHEEL", wheel)
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def classify(wheel: str, kept: dict[str, str]) -> tuple[str, str, str]:
    """(name, version, what pip does with it) for a wheel file name that ``pip download``
    chose: "kept (the image's)", "pure-Python wheel" or "binary wheel <tag>"."""
    name, version, _, tags = parse_wheel_filename(wheel)
    if kept.get(str(name)) == str(version):
        return str(name), str(version), "kept (the image's)"
    tag = sorted({f"{t.interpreter}-{t.abi}-{t.platform}" for t in tags})[0]
    if all(t.platform == "any" and t.abi == "none" for t in tags):
        return str(name), str(version), "pure-Python wheel"
    return str(name), str(version), "binary wheel " + re.sub(r"manylinux_2_\d+_", "manylinux_", tag)


def _pip_download(args: list[str], dest: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def _platform_args(image: Image, platforms: list[str]) -> list[str]:
    py = image.python.replace(".", "")
    args = ["--only-binary=:all:", "--python-version", image.python]
    args += ["--implementation", "cp", "--abi", f"cp{py}", "--abi", "abi3", "--abi", "none"]
    return args + [a for p in platforms for a in ("--platform", p)]


def needs_compiler(name: str, image: Image, work: Path, index: tuple[str, ...] = ()) -> str:
    """Why ``name`` has no wheel for the image: PyPI has binary wheels of it for x86-64
    (so it has compiled code: building it needs a compiler), or only an sdist.
    ``index``: pip's index options (default PyPI)."""
    probe = Image("x86-64", "", image.python, "x86_64", (2, 17), {})
    args = [*_platform_args(probe, probe.platforms()), *index, "--no-deps", name]
    res = _pip_download(args, work)
    if res.returncode == 0:
        return f"needs a compiler: PyPI has binary wheels of {name}, none for {image.arch}"
    return f"no wheel of {name} on PyPI: pip builds its sdist (a compiler if it has C code)"


@dataclass
class Resolution:
    """What pip would do on the image: ok, wheels [(name, version, what)], problems."""

    ok: bool
    wheels: list[tuple[str, str, str]]
    problems: list[str]


def resolve(
    reqs: list[Requirement], image: Image, work: Path, index: tuple[str, ...] = ()
) -> Resolution:
    """pip's resolver for the image's platform, the image's kept packages installed.
    ``index``: pip's index options (default PyPI; tests pass ``--no-index`` and a folder)."""
    kept = kept_packages(reqs, image)
    stubs, dest = work / "installed", work / "wheels"
    stubs.mkdir(parents=True)
    dest.mkdir()
    for name, version in kept.items():
        write_stub_wheel(stubs, name, version)
    constraints = work / "image-constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in kept.items()))
    args = [*_platform_args(image, image.platforms()), *index, "--find-links", str(stubs)]
    res = _pip_download([*args, "--constraint", str(constraints), *map(str, reqs)], dest)
    wheels = [classify(f.name, kept) for f in sorted(dest.glob("*.whl"))]
    problems = []
    if res.returncode != 0:
        missing = re.findall(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", res.stderr)
        problems += [needs_compiler(m, image, work / m, index) for m in missing]
        problems += [] if missing else [res.stderr.strip()[-600:]]
    for name, version, what in wheels:
        if name in NEVER:
            problems.append(f"pulls {name} {version}")
        elif what.startswith("binary") and image.version(name):
            problems.append(f"replaces the image's binary {name} {image.version(name)}")
    return Resolution(not problems, wheels, problems)


#: Tests that need neither torch nor g++: what a board install runs (the board subset).
BOARD_TESTS = (
    "test_bundle.py", "test_datapath.py", "test_engine_exact.py", "test_engine_threads.py",
    "test_layers.py", "test_perfmodel.py", "test_preprocess.py", "test_server.py",
    "test_server_load.py", "test_streams.py",
)  # fmt: skip
#: What the board subset needs besides the package's own requirements.
TEST_TOOLS = ("pytest", "hypothesis")


def run_board_tests(image: Image, python: str, workdir: Path, every_pin: bool = False) -> int:
    """The board subset of the tests with what the image would have after the install, on
    ``python`` (the image's Python version, e.g. a python3.10 on this host): a fresh venv
    gets the image's kept packages pinned, the other requirements and TEST_TOOLS from
    PyPI, then pytest runs this checkout (PYTHONPATH) on :data:`BOARD_TESTS`.
    ``every_pin``: pin every package the image ships, also those a requirement excludes
    (what lowering that bound would give).  Returns pytest's exit status."""
    venv = workdir / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    reqs = base_requirements()
    kept = kept_packages(reqs, image)
    if every_pin:
        kept = {name: version for name, (version, _) in image.packages.items()}
    pins = [f"{n}=={v}" for n, v in kept.items()]
    rest = [str(r) for r in reqs if canonicalize_name(r.name) not in kept]
    subprocess.run([vpy, "-m", "pip", "install", "-q", *pins, *rest, *TEST_TOOLS], check=True)
    tests = [str(ROOT / "tests" / t) for t in BOARD_TESTS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def report(tag: str, image: Image, reqs: list[Requirement]) -> bool:
    """Print one image's check as Markdown; True when it passes."""
    boards = ", ".join(b for b, tags in BOARD_IMAGES.items() if tag in tags)
    print(f"\n### {tag}: {image.title} (boards: {boards})\n")
    print(f"pynq {image.pynq}, Python {image.python}, {image.arch}, glibc {image.glibc[0]}."
          f"{image.glibc[1]}; sources: {', '.join(image.sources)}\n")  # fmt: skip
    print("| requirement | image has | pip |\n|---|---|---|")
    for req, have, verdict in keep_or_fetch(reqs, image):
        print(f"| `{req}` | {have} | {verdict} |")
    with tempfile.TemporaryDirectory() as tmp:
        res = resolve(reqs, image, Path(tmp))
    print(f"\npip's resolver for {image.arch}, cp{image.python.replace('.', '')}: "
          f"{'resolved' if res.ok else 'FAILED'}\n")  # fmt: skip
    print("| package | version | what pip does |\n|---|---|---|")
    for name, version, what in res.wheels:
        print(f"| {name} | {version} | {what} |")
    for p in res.problems:
        print(f"\n**{p}**")
    return res.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", choices=sorted(IMAGES), action="append")
    parser.add_argument("--board", choices=sorted(BOARD_IMAGES), action="append")
    parser.add_argument(
        "--test-with",
        metavar="PYTHON",
        help="also run the board subset of the tests with the image's package versions, "
        "in a venv of this interpreter (the image's Python version, e.g. python3.10)",
    )
    parser.add_argument(
        "--every-image-version",
        action="store_true",
        help="with --test-with: every package at the image's version, also those a "
        "requirement excludes (would lowering that bound work?)",
    )
    args = parser.parse_args(argv)
    tags = list(args.image or [])
    tags += [t for b in args.board or [] for t in BOARD_IMAGES[b]]
    reqs = base_requirements()
    failed = False
    for tag in dict.fromkeys(tags or IMAGES):
        image = IMAGES[tag]
        failed |= not report(tag, image, reqs)
        if args.test_with:
            with tempfile.TemporaryDirectory() as tmp:
                status = run_board_tests(image, args.test_with, Path(tmp), args.every_image_version)
            print(f"\nboard subset of the tests with {tag}'s versions: exit status {status}")
            failed |= status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
