"""Backends run the layers the hardware conv engine takes (contract 3), from one registry.

A backend (:class:`Backend`) has ``name``, ``description`` (one line saying what runs
the layers), ``capabilities`` (:class:`Capabilities`, declared, never probed) and
``run_conv(x, spec) -> y`` with int16 NHWC ``x`` and ``y`` exactly equal to
:func:`pynq_nbq.ops.conv_layer` (x, spec).  What it declares it also provides:

* ``thread_safe``: ``run_conv`` may be called from several threads at once (the
  engine then splits batches over its ``threads``);
* ``arm_ops``: ``arm_conv(x, spec)`` runs the engine's ARM-side conv and linear
  layers too (otherwise the numpy reference runs them);
* ``checks_bundle``: ``check_bundle(manifest)`` (the typed ``bundle.Manifest``)
  raises ``ValueError`` naming why it cannot run a bundle;
* ``device``: the conv-engine layers go through the kernel's byte streams (the
  board, or a simulation of it) rather than a CPU implementation;
* ``whole_network``: ``compile_network(chain, input_name, output_name, threads)``
  returns a callable that runs a whole chain of layers in one call (int16 input ->
  int16 logits), or None when the chain is not one it can run (the engine then goes
  layer by layer).

The engine (:mod:`pynq_nbq.engine`) decides what runs where and calls them.  Every
backend is made by :func:`get_backend` from its :class:`BackendEntry` in the registry
(:func:`register_backend`); :data:`BACKENDS` and the CLI's ``--backend`` choices are the
registry's names:

* ``auto``  - ``native`` where its kernel builds and loads, else ``numpy`` (the default);
* ``numpy`` - the reference;
* ``native`` - the same integers in a C kernel built at first use (fast; x86, Arm);
* ``csim``  - the HLS C++ kernel compiled with g++, fed the DMA byte streams;
* ``fpga``  - the overlay on a Zynq board through pynq (board only; ``overlay="sim"`` or
  ``"sim:<board>"``: a simulated board).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..ops import ConvSpec

if TYPE_CHECKING:
    from ..manifest import Manifest


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares beyond ``run_conv`` (see the module docstring)."""

    thread_safe: bool = False
    arm_ops: bool = False
    checks_bundle: bool = False
    device: bool = False
    whole_network: bool = False

    @property
    def where(self) -> str:
        """``"device"`` (the kernel's streams) or ``"cpu"``."""
        return "device" if self.device else "cpu"


class Backend(Protocol):
    """The interface the engine calls (``arm_conv``/``check_bundle`` only when declared)."""

    name: str

    @property
    def description(self) -> str: ...

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray: ...


class ArmBackend(Backend, Protocol):
    """A backend that declares ``arm_ops``."""

    def arm_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray: ...


class CheckingBackend(Backend, Protocol):
    """A backend that declares ``checks_bundle``."""

    def check_bundle(self, manifest: Manifest) -> None: ...


class NetworkBackend(Backend, Protocol):
    """A backend that declares ``whole_network``."""

    def compile_network(
        self, chain: Any, input_name: str, output_name: str, threads: int
    ) -> Callable[[np.ndarray], np.ndarray] | None: ...


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend: how to make it (``factory(**options)``, importing lazily)
    and what it declares.  ``capabilities`` None: decided by the backend it makes (``auto``)."""

    name: str
    factory: Callable[..., Backend]
    capabilities: Capabilities | None
    summary: str


_REGISTRY: dict[str, BackendEntry] = {}


def register_backend(entry: BackendEntry) -> BackendEntry:
    """Add a backend to the registry; ValueError if the name is taken."""
    if entry.name in _REGISTRY:
        raise ValueError(f"backend {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def backend_names(where: str | None = None) -> tuple[str, ...]:
    """The registered names (``where="cpu"``: those that run every layer on the CPU,
    ``auto`` included; ``"device"``: those that use the kernel's streams)."""
    if where is None:
        return tuple(_REGISTRY)
    return tuple(
        e.name
        for e in _REGISTRY.values()
        if (e.capabilities.where if e.capabilities else "cpu") == where
    )


def backend_entry(name: str) -> BackendEntry:
    """The registry entry of ``name``; ValueError naming the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {backend_names()}") from None


def get_backend(name: str, **options: Any) -> Backend:
    """Make backend ``name`` with its ``options`` (fpga: ``overlay``, ``timeout_s``; csim:
    ``pe``, ``defines``, ``max_packet_bytes``); ValueError naming the choices or what is
    missing."""
    return backend_entry(name).factory(**options)


def capabilities_of(backend: Backend) -> Capabilities:
    """What ``backend`` declares: its class's ``capabilities``, else its registry entry's
    (csim and fpga are declared there; TODO: their classes declare their own)."""
    if hasattr(type(backend), "capabilities"):
        caps = type(backend).capabilities  # type: ignore[attr-defined]
        if isinstance(caps, Capabilities):
            return caps
    entry = _REGISTRY.get(backend.name)
    if entry is not None and entry.capabilities is not None:
        return entry.capabilities
    raise TypeError(
        f"backend {backend.name!r} declares no capabilities "
        "(give its class a `capabilities = Capabilities(...)`)"
    )


def _auto(**options: Any) -> Backend:
    from .native import auto_backend

    return auto_backend(**options)


def _numpy(**options: Any) -> Backend:
    from .numpy_backend import NumpyBackend

    return NumpyBackend(**options)


def _native(**options: Any) -> Backend:
    from .native import NativeBackend

    return NativeBackend(**options)


def _csim(**options: Any) -> Backend:
    from .csim import CsimBackend

    return CsimBackend(**options)


def _fpga(**options: Any) -> Backend:
    try:
        from .fpga import FpgaBackend
    except ModuleNotFoundError as exc:
        raise ValueError(f"backend 'fpga' is not available: {exc}") from exc
    return FpgaBackend(**options)


CPU_EXACT = Capabilities(thread_safe=True)
register_backend(BackendEntry("auto", _auto, None, "native where it builds, else numpy"))
register_backend(BackendEntry("numpy", _numpy, CPU_EXACT, "the numpy reference"))
register_backend(
    BackendEntry(
        "native",
        _native,
        Capabilities(thread_safe=True, arm_ops=True, whole_network=True),
        "the C kernel of pynq_nbq.native",
    )
)
register_backend(
    BackendEntry(
        "csim",
        _csim,
        Capabilities(checks_bundle=True, device=True),
        "the HLS kernel as a g++ C-simulation, fed the DMA byte streams",
    )
)
register_backend(
    BackendEntry(
        "fpga",
        _fpga,
        Capabilities(arm_ops=True, checks_bundle=True, device=True),
        "the overlay through pynq (overlay='sim': the simulated board)",
    )
)

#: every registered backend name (the CLI's ``--backend`` choices)
BACKENDS = backend_names()
