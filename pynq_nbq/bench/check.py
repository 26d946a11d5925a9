"""``nbq check``: a backend against the numpy reference, logit for logit, on Fashion-MNIST.

    report = check_backend("native", ["fmnist-svpe", "fmnist-vpe"], images=1000)

For each bundle, the first ``images`` Fashion-MNIST test images are preprocessed for
the bundle (``preprocess.preprocess``, the contract's image path), quantised from their
8-bit pixels, and run through the engine twice - on the backend under test and on
``numpy`` - in batches; every int16 logit is compared.  The report (one JSON schema for
every backend, :data:`SCHEMA`) gives per bundle the images whose logits differ in any
element (must be 0), both accuracies, and each side's images/s in this run (measured
one after the other in one process; off the board csim and fpga are simulations, so
their speeds are this host's, labelled ``timing_label``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import api
from ..backends import Backend, backend_names, capabilities_of, get_backend
from ..idx import FASHION_DIR, fashion_idx
from ..preprocess import preprocess

SCHEMA = "pynq-nbq/check"
SCHEMA_VERSION = 1
DEFAULT_MODELS = ("fmnist-svpe", "fmnist-vpe")
#: backends ``nbq check`` compares with numpy (numpy itself, and auto, would be trivial)
CHECKED = tuple(n for n in backend_names() if n not in ("numpy", "auto"))


def fashion_pixels(
    input_spec: dict[str, Any], n: int, data_dir: Path = FASHION_DIR, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Test images ``start .. start + n`` preprocessed for a bundle's ``input`` block:
    (uint8 pixels N x C x H x W, int64 labels)."""
    images = fashion_idx(data_dir, "t10k-images-idx3-ubyte")[start : start + n]
    labels = fashion_idx(data_dir, "t10k-labels-idx1-ubyte")[start : start + n]
    if len(images) == 0:
        raise ValueError(f"no Fashion-MNIST test images in range {start}..{start + n}")
    pixels = np.stack([preprocess(Image.fromarray(im, "L"), input_spec) for im in images])
    return pixels, labels.astype(np.int64)


def _run(model: api.Model, xq: np.ndarray, batch: int) -> tuple[np.ndarray, float, float]:
    """(int16 logits, engine seconds, conv-engine seconds) over ``xq`` in batches."""
    out, secs, conv = [], 0.0, 0.0
    for i in range(0, len(xq), batch):
        t0 = time.perf_counter()
        out.append(model.engine.run(xq[i : i + batch]))
        secs += time.perf_counter() - t0
        conv += model.engine.timings.get("conv-engine", 0.0)
    return np.concatenate(out), secs, conv


def check_model(
    name: str, backend: Backend, images: int, batch: int, data_dir: Path, threads: int = 1
) -> dict[str, Any]:
    """One bundle on ``backend`` and on numpy: the per-bundle entry of the report."""
    ref = api.load_model(name, "numpy", threads)
    dut = api.load_model(name, backend, threads)
    x, labels = fashion_pixels(ref.input_spec, images, data_dir)
    xq = ref.engine.quantize_input(x)
    dut.engine.run(xq[:1])  # build or load the kernel outside the timing
    got, t_dut, t_conv = _run(dut, xq, batch)
    want, t_ref, _ = _run(ref, xq, batch)
    n = len(xq)
    return {
        "model": name,
        "datapath": ref.spec.pe.value,
        "weight_bits": ref.spec.weight_bits,
        "images_count": n,
        "images_with_different_logits_count": int((got != want).any(axis=1).sum()),
        "backend_accuracy_top1_fraction": float((got.argmax(1) == labels).mean()),
        "numpy_accuracy_top1_fraction": float((want.argmax(1) == labels).mean()),
        "backend_images_per_s": n / t_dut,
        "backend_conv_engine_images_per_s": n / t_conv if t_conv else None,
        "numpy_images_per_s": n / t_ref,
    }


def check_backend(
    backend: str,
    models: list[str] | tuple[str, ...] = DEFAULT_MODELS,
    images: int = 1000,
    batch: int = 50,
    data_dir: Path = FASHION_DIR,
    threads: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """The report of ``nbq check`` (JSON-ready; keys carry units); ``options`` go to
    :func:`pynq_nbq.backends.get_backend` (csim: ``defines``; fpga: ``overlay``)."""
    if backend not in CHECKED:
        raise ValueError(f"backend must be one of {CHECKED}, got {backend!r}")
    if images < 1 or batch < 1 or threads < 1:
        raise ValueError("images, batch and threads must be >= 1")
    dut = get_backend(backend, **options)
    results = [check_model(m, dut, images, batch, Path(data_dir), threads) for m in models]
    where = "device simulated on this host" if capabilities_of(dut).device else "this host's CPU"
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "backend": backend,
        "backend_description": dut.description,
        "reference": "numpy",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
        "batch_images": batch,
        "engine_threads_count": threads,
        "timing_label": f"measured in one process, one engine after the other ({where})",
        "results": results,
        "all_logits_equal": not any(r["images_with_different_logits_count"] for r in results),
    }


def summary_line(r: dict[str, Any]) -> str:
    """One bundle's result in words."""
    conv = r["backend_conv_engine_images_per_s"]
    return (
        f"{r['model']} ({r['datapath']}, {r['weight_bits']}-bit): "
        f"{r['images_with_different_logits_count']} of {r['images_count']} images differ "
        f"from numpy; accuracy {100 * r['backend_accuracy_top1_fraction']:.2f}% "
        f"(numpy {100 * r['numpy_accuracy_top1_fraction']:.2f}%); "
        f"{r['backend_images_per_s']:.1f} images/s"
        + (f" (conv engine alone {conv:.1f})" if conv else "")
        + f" vs numpy {r['numpy_images_per_s']:.1f}"
    )
