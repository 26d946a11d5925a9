"""One distribution: ``pynq_nbq`` (board + host, no torch) and ``host_train`` (torch).

Extras:
  train  - torch and the training tools (workstation).  The range admits any
           recent build; install the CPU wheel first (``pip install torch==2.13.0``)
           on machines without a GPU, or pip may fetch a multi-GB CUDA build.
  board  - the pynq library (on the ZCU102; pins numpy<2 and Python <= 3.12).  A PYNQ
           image already has it, and ``pynq>=3.0`` keeps that copy.  Off the board,
           scripts/setup_and_test.sh installs pynq==3.0.1 + pycparser<3 for the
           simulated-board tests when pynq is missing.
  csim   - hls4ml, whose wheel carries Xilinx's Apache-2.0 ap_int headers.
  test   - what the test suite needs.
"""

from setuptools import find_packages, setup

TRAIN = ["torch>=2.1,<3", "tqdm>=4.60", "matplotlib>=3.5", "scikit-learn>=1.0"]
CSIM = ["hls4ml>=1.0"]
TEST = [
    "pytest>=7",
    "hypothesis>=6",
    "ruff>=0.5",
    "prometheus-client>=0.17",
    "selenium>=4.10",
    *TRAIN,
    *CSIM,
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
            "hls_src/*",
        ]
    },
    install_requires=[
        "numpy>=1.22",
        "pillow>=9",
        "flask>=2.2",
        "waitress>=2.1",
        "threadpoolctl>=3",
    ],
    extras_require={
        "train": TRAIN,
        "board": ["pynq>=3.0"],
        "csim": CSIM,
        "test": TEST,
    },
    entry_points={"console_scripts": ["nbq=pynq_nbq.cli:main"]},
)
