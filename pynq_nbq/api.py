"""The Python API: load a bundle, classify images or predict on numpy batches.

from pynq_nbq import api
model = api.load_model()                      # the embedded default (svpe), fastest engine
pred = model.classify(["shoe.png"])
pred.labels, pred.probabilities, pred.timings_ms
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend
from .bundle import Bundle, Manifest, load_bundle
from .engine import Engine, softmax
from .preprocess import open_image, preprocess

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: the keys of ``timings_ms`` (milliseconds), the same in the API and the server's answers:
#: decode (Pillow), preprocess (convert/resize/invert), quantize (pixels -> int16), engine
#: (all layers; its conv_engine and arm parts), postprocess (softmax, arg-max), total; and
#: in the server's answers only (:data:`SERVER_TIMING_KEYS`): read (the request body),
#: admission (waiting for a queue place and for decode memory), queue (waiting for the
#: device), handoff (between threads), respond (building and encoding the answer)
TIMING_KEYS = (
    "read",
    "admission",
    "decode",
    "preprocess",
    "queue",
    "quantize",
    "engine",
    "conv_engine",
    "arm",
    "postprocess",
    "handoff",
    "respond",
    "total",
)
SERVER_TIMING_KEYS = ("read", "admission", "queue", "handoff", "respond")
DEFAULT_MODEL = "fmnist-svpe"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def model_path(name_or_path: str | os.PathLike | None = None) -> Path:
    """A bundle directory: an embedded model's name (see :func:`embedded_models`),
    a path, or None for the default."""
    if name_or_path is None:
        return MODELS_DIR / DEFAULT_MODEL
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if (MODELS_DIR / str(name_or_path)).is_dir():
        return MODELS_DIR / str(name_or_path)
    return p


def embedded_models() -> list[str]:
    """Names of the bundles shipped inside the package."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").exists())


def sample_images() -> list[Path]:
    """The sample images shipped inside the package."""
    return sorted(SAMPLES_DIR.glob("*.png")) if SAMPLES_DIR.is_dir() else []


def _slug(name: str) -> str:
    """A class name as the samples' file names spell it: ``"T-shirt/top"`` -> ``t-shirt-top``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sample_for(classes: list[str]) -> Path | None:
    """A shipped sample of one of ``classes``, or None when none is (another dataset's model).

    The samples are named ``<class index>-<class name>.png`` (Fashion-MNIST's ten classes):
    one matches when ``classes[index]`` is that class name.
    """
    for path in sample_images():
        index, _, name = path.stem.partition("-")
        if index.isdigit() and int(index) < len(classes) and _slug(classes[int(index)]) == name:
            return path
    return None


@dataclass
class Prediction:
    """Answers for a batch of N images.

    indices: (N,) class ids; labels: N class names; probabilities: (N, K) float64;
    logits_q: (N, K) int16 with ``logits_frac`` fractional bits;
    timings_ms: milliseconds per stage for the whole batch, keys from :data:`TIMING_KEYS`
    (``decode`` and ``preprocess`` only from :meth:`Model.classify`; no ``queue``);
    backend: the backend that computed it (``numpy``, ``native``, ``csim``, ``fpga``).
    """

    indices: np.ndarray
    labels: list[str]
    probabilities: np.ndarray
    logits_q: np.ndarray
    logits_frac: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    def top_k(self, i: int, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities[i], kind="stable")[:k]
        return [(self.classes[j], float(self.probabilities[i, j])) for j in order]

    classes: list[str] = field(default_factory=list)
    backend: str = ""


class Model:
    """A bundle on an engine and backend, ready to classify.

    ``backend="auto"`` (the default) runs the native C kernel where it builds and
    loads and the numpy reference otherwise (:func:`pynq_nbq.backends.get_backend`);
    both give identical integers.
    """

    def __init__(self, bundle: Bundle, backend: str | Backend = "auto", threads: int = 1) -> None:
        self.bundle = bundle
        self.engine = Engine(bundle, backend, threads)

    @property
    def spec(self) -> Manifest:
        """The bundle's typed manifest (the one view of it; ``bundle.Manifest``)."""
        return self.engine.parsed

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def input_spec(self) -> dict:
        """The raw ``input`` block, for :func:`preprocess.preprocess` (which takes a dict;
        the typed block is ``spec.input``)."""
        return self.bundle.manifest["input"]

    @property
    def input_fit(self) -> tuple[int, int]:
        """The input's (width, height) in pixels: images are decoded no larger than
        this needs (``preprocess.open_image(fit=...)``)."""
        return self.spec.input.width, self.spec.input.height

    def open_image(self, image, max_pixels: int | None = None, formats=None):
        """Decode ``image`` (bytes, a path or a PIL image) no larger than this model's
        input needs (``preprocess.open_image`` with its ``fit`` and ``resize``)."""
        return open_image(
            image,
            fit=self.input_fit,
            max_pixels=max_pixels,
            resize=self.input_spec.get("resize", "stretch"),
            formats=formats,
        )

    @property
    def backend_name(self) -> str:
        return self.engine.backend.name

    @property
    def backend_description(self) -> str:
        """One line on what runs the layers (and why, if ``auto`` fell back to numpy)."""
        return self.engine.backend.description

    def preprocess(self, image) -> np.ndarray:
        """bytes, a path or a PIL image -> uint8 pixels (C, H, W); decoded no larger
        than the input needs (``open_image(fit=...)``)."""
        return preprocess(self.open_image(image), self.input_spec)

    def predict(self, batch: np.ndarray) -> Prediction:
        """uint8 pixels (N, C, H, W) (exact, as :meth:`preprocess` gives them) or
        normalised float images -> :class:`Prediction` (see ``Engine.quantize_input``)."""
        t0 = time.perf_counter()
        xq = self.engine.quantize_input(np.asarray(batch))
        t1 = time.perf_counter()
        logits = self.engine.run(xq)
        t2 = time.perf_counter()
        real = logits.astype(np.float64) * 2.0**-self.engine.output_frac
        probs = softmax(real)
        idx = np.argmax(logits, axis=1)
        t3 = time.perf_counter()
        timings = {
            "quantize": 1e3 * (t1 - t0),
            "engine": 1e3 * (t2 - t1),
            "conv_engine": 1e3 * self.engine.timings.get("conv-engine", 0.0),
            "arm": 1e3 * self.engine.timings.get("arm", 0.0),
            "postprocess": 1e3 * (t3 - t2),
            "total": 1e3 * (t3 - t0),
        }
        return Prediction(
            idx,
            [self.classes[i] for i in idx],
            probs,
            logits,
            self.engine.output_frac,
            timings,
            self.classes,
            self.backend_name,
        )

    def classify(self, images: list) -> Prediction:
        """Decode, preprocess and classify images (bytes, paths or PIL images)."""
        t0 = time.perf_counter()
        decoded = [self.open_image(im) for im in images]
        t1 = time.perf_counter()
        batch = np.stack([preprocess(im, self.input_spec) for im in decoded])
        t2 = time.perf_counter()
        pred = self.predict(batch)
        t = pred.timings_ms
        t["decode"] = 1e3 * (t1 - t0)
        t["preprocess"] = 1e3 * (t2 - t1)
        t["total"] += 1e3 * (t2 - t0)
        # in pipeline order, total last (as TIMING_KEYS lists them), for whoever prints them
        pred.timings_ms = {k: t[k] for k in TIMING_KEYS if k in t}
        pred.timings_ms.update((k, v) for k, v in t.items() if k not in TIMING_KEYS)
        return pred


def load_model(
    name_or_path: str | os.PathLike | None = None,
    backend: str | Backend = "auto",
    threads: int = 1,
) -> Model:
    """Load and validate a bundle (embedded name, path, or None for the default).

    ``threads > 1`` splits each batch over that many threads (see
    :class:`pynq_nbq.engine.Engine`); use it with a one-thread BLAS.
    """
    return Model(load_bundle(model_path(name_or_path)), backend, threads)
