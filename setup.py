"""One distribution: ``pynq_nbq`` (board + host, no torch) and ``host_train`` (torch).

Extras:
  train  - torch and the training tools (workstation).  The range admits any
           recent build; install the CPU wheel first (``pip install torch==2.13.0``)
           on machines without a GPU, or pip may fetch a multi-GB CUDA build.
  board  - nothing: on a board, pynq (and numpy, Pillow, Flask) come from the PYNQ image and
           must not be reinstalled by pip (pynq 3.1/4.0 pin grpcio==1.64.0, which has no
           aarch64 wheel).  Install into the image's pynq-venv; see docs/board.md.
  csim   - hls4ml, whose wheel carries Xilinx's Apache-2.0 ap_int headers.
  sim    - the simulated ZCU102 on a host (NBQ_OVERLAY=sim): pynq 3.0.1 (whose sdist needs
           pycparser<3 on x86), the csim extra, and what runs notebooks/ headless there
           (matplotlib, nbclient's ``jupyter execute``, ipykernel).  Never on a board.
           scripts/setup_and_test.sh installs the same pynq when it is missing.
  bench  - the chart and progress bar of ``nbq bench`` (matplotlib, tqdm).
  test   - what the test suite needs.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: Kinds of file under hls/ that travel in the wheel (as pynq_nbq/hls_src/), found by glob so
#: that new kernel sources need no edit here; build outputs (hls/build/, *.so, *.o) never do.
HLS_SUFFIXES = {".h", ".hpp", ".cpp", ".tcl", ".py", ".md"}


def hls_sources(root: Path = HERE / "hls") -> list[Path]:
    """Kernel sources under ``root`` (relative paths): HLS_SUFFIXES, no hidden or build dirs."""
    out = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        skipped = any(d in ("build", "__pycache__") or d.startswith(".") for d in rel.parts[:-1])
        if f.is_file() and f.suffix in HLS_SUFFIXES and not skipped:
            out.append(rel)
    return out


class BuildPyWithHls(build_py):
    """build_py that also copies hls/ into the package as pynq_nbq/hls_src/ (csim backend).

    An editable install skips the copy: there the checkout's hls/ is found directly.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = HERE / "hls"
        dest = Path(self.build_lib) / "pynq_nbq" / "hls_src"
        files = hls_sources(src)
        if not files:
            raise RuntimeError(f"no HLS sources found under {src}; build from a full checkout")
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest / rel)


#: What the package needs everywhere.  The lower bounds admit the board images' own
#: versions (PYNQ 3.0/3.1 and Kria-PYNQ on Ubuntu 22.04: numpy 1.21.5 / 1.26.4, Pillow
#: 9.0.1; Flask 2.1.3 and prometheus-client 0.14.1 in pynq-venv), so that pip keeps them;
#: scripts/check_board_wheels.py checks this for every board's image (aarch64 and armv7l,
#: Python 3.10) and that nothing needs a compiler.
BASE = [
    "numpy>=1.21",
    "pillow>=9.0",
    "flask>=2.1",
    "waitress>=2.1",
    "threadpoolctl>=3",
    "prometheus-client>=0.14",
]
TRAIN = ["torch>=2.1,<3", "tqdm>=4.60", "matplotlib>=3.5", "scikit-learn>=1.0"]
CSIM = ["hls4ml>=1.0"]
#: scripts/bench_engine.py's peers (ONNX Runtime fp32/int8).  Both run with numpy 1.x, which
#: pynq needs (tested: onnxruntime 1.32.0 and onnx 1.23.2 with numpy 1.26.4); the lower
#: bounds are the first releases whose wheels accept numpy 1.x and 2.x alike.
BENCH = ["matplotlib>=3.5", "tqdm>=4.60", "onnxruntime>=1.19", "onnx>=1.16"]
#: What notebooks/nbq_zcu102.ipynb needs off the board besides the package: its plot, and a
#: kernel and runner for ``jupyter execute`` (docs/board.md).
NOTEBOOK = ["matplotlib>=3.5", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6"]
#: Exchanging models (docs/interop.md).  Probed together with torch 2.13 (CPU) and numpy
#: 1.26 on Python 3.11: onnx 1.23.2, onnxruntime 1.32.0, qonnx 1.0.0, brevitas 0.13.4,
#: onnxoptimizer 0.4.2, hls4ml 1.3.0 (pip's resolver kept torch and numpy 1.x).
INTEROP = [
    "onnx>=1.16",  # our export/import are plain onnx graphs (1.16+: numpy 1.x and 2.x wheels)
    "onnxruntime>=1.17",  # qonnx's executor runs the standard nodes in it
    "qonnx>=1.0",  # the reference executor, cleanup and shape inference of QONNX graphs
    # Brevitas's QONNX export; brevitas' own [export] extra pins onnx 1.17 and its numpy
    # extra numpy<2, so plain brevitas + onnxoptimizer (its export refuses to run without);
    # brevitas itself pins setuptools<81
    "brevitas>=0.11",
    "onnxoptimizer>=0.3",
    "hls4ml>=1.0",  # converts our QONNX and runs its C++ emulation (g++); never [qkeras]
]
TEST = [
    "pytest>=7",
    "hypothesis>=6",
    "ruff>=0.5",
    "mypy>=1.10",  # CI: mypy on pynq_nbq (config in pyproject.toml)
    "selenium>=4.10",
    "packaging>=21",  # scripts/check_board_wheels.py
    "build>=1",  # tests/test_wheel.py builds the sdist
    "wheel>=0.40",  # ... and the wheel without build isolation (bdist_wheel on setuptools < 70)
    *NOTEBOOK,  # runs notebooks/ in CI
    *TRAIN,
    *CSIM,
    *BENCH,
    *INTEROP,
]

setup(
    name="pynq-nbq",
    version="0.1.0",
    description="n-bit power-of-two (shift) neural networks on Zynq FPGAs (n-BQ-NN)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["pynq_nbq", "pynq_nbq.*", "host_train", "host_train.*"]),
    include_package_data=True,
    package_data={
        "pynq_nbq": [
            "models/*/*",
            "models/*/*/*",
            "samples/*",
            "boards/*",
            "perfmodel/*.json",
            "server/static/*",
            "server/*.conf",
            "native/*.c",
        ]
    },
    install_requires=BASE,
    extras_require={
        "train": TRAIN,
        "board": [],
        "csim": CSIM,
        "sim": ["pynq==3.0.1", "pycparser<3", *CSIM, *NOTEBOOK],
        "bench": BENCH,
        "interop": INTEROP,
        "test": TEST,
    },
    entry_points={"console_scripts": ["nbq=pynq_nbq.cli:main"]},
    cmdclass={"build_py": BuildPyWithHls},
)
