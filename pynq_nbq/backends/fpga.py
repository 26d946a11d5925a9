"""The ``fpga`` backend: conv-engine layers on the board's nbq overlay through pynq.

Where the overlay comes from (``overlay`` argument, else ``$NBQ_OVERLAY``):

* a directory holding ``nbq_svpe.bit``/``.hwh`` and/or ``nbq_vpe.bit``/``.hwh``
  (default: ``pynq_nbq/overlays/`` of the installed package) - a PYNQ board;
* ``sim`` (the ZCU102) or ``sim:<board>`` (any board of ``kernel.design.BOARD_TARGETS``:
  ``zcu102``, ``zcu104``, ``kv260``, ``pynq-z2``) - a simulated board of
  :mod:`pynq_nbq.sim.board` loading that board's block design: the unmodified pynq
  library driving a model of the DMA and the csim kernel, on any host with pynq, g++
  and the hls4ml headers.  Explicit opt-in only.

The overlay for a PE kind is loaded when a bundle of that kind is checked (or a
layer of that kind runs); loading the other kind replaces it, as on a board with
one fabric.  Layers are compiled once per ``ConvSpec`` (weights packed once).
``pynq`` is imported here, not at ``import pynq_nbq``; without it this backend
says what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import datapath as dp
from .. import native
from ..bundle import Manifest
from ..kernel.checks import check_manifest
from ..kernel.scheduler import CompiledLayers
from ..ops import ConvSpec

if TYPE_CHECKING:  # both import pynq, which this module imports only when used
    from ..kernel.driver import FpgaConvDevice
    from ..sim.board import SimBoard

#: Environment variable naming the overlay source (a directory, or ``sim``).
OVERLAY_ENV = "NBQ_OVERLAY"
#: Where a board install keeps the bitstreams when ``$NBQ_OVERLAY`` is not set.
PACKAGE_OVERLAYS = Path(__file__).resolve().parent.parent / "overlays"


def _require_pynq() -> None:
    if importlib.util.find_spec("pynq") is None:
        raise ValueError(
            "backend 'fpga' needs the pynq library: it is part of a PYNQ board image "
            "(on another host: pip install 'pynq==3.0.1' 'pycparser<3'; then "
            f"{OVERLAY_ENV}=sim runs against a simulated ZCU102, sim:<board> another board)"
        )


class FpgaBackend:
    """Conv-engine layers on the fabric (see the module docstring).

    Args:
        overlay: a directory of bitstreams, or ``"sim"``; default ``$NBQ_OVERLAY`` or
            the package's ``overlays/``.
        timeout_s: base deadline of one kernel call (the driver adds time per byte).
        kind_defines: simulated boards only: per PE kind, the ``NBQ_*`` defines of the
            board's kernel builds.  Default: for ``sim:<board>`` the board's own default
            builds (``kernel/builds.py``, what ``make -C overlay BOARD=<board>`` builds:
            the 3-bit svpe kernel, buffers sized for the embedded networks); for plain
            ``sim`` the build of ``hls/nbq_params.h`` (svpe n <= 5, the header's maxima).
    """

    name = "fpga"

    def __init__(
        self,
        overlay: str | Path | None = None,
        timeout_s: float | None = None,
        kind_defines: Mapping[str, Mapping[str, int]] | None = None,
    ):
        _require_pynq()
        from ..kernel import driver

        self._driver = driver
        source = str(overlay or os.environ.get(OVERLAY_ENV) or PACKAGE_OVERLAYS)
        self.sim = source == "sim" or source.startswith("sim:")
        self.source = source
        self.timeout_s = driver.DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        self.board: SimBoard | None = None
        self.board_name: str | None = None
        if self.sim:
            from ..sim.board import shared_board  # a simulated board, by explicit request

            self.board_name = source.partition(":")[2] or "zcu102"
            if kind_defines is None and source.startswith("sim:"):
                from ..kernel import builds

                kind_defines = {
                    k.value: builds.defines(self.board_name, k.value) for k in dp.PEKind
                }
            self.board = shared_board(self.board_name, kind_defines)
        self._device: FpgaConvDevice | None = None
        self._layers: CompiledLayers | None = None
        self._lock = threading.Lock()
        self.arm_conv = native.fastest_conv()  # the engine's ARM-side conv/linear layers

    @property
    def description(self) -> str:
        """What runs the layers: the overlay through pynq, on the simulated board or not."""
        if self.board is not None:
            return (
                f"overlay through pynq on a simulated {self.board_name}"
                " (NBQ_OVERLAY=sim; emulated timings, unmeasured on hardware)"
            )
        return f"overlay through pynq ({self.source})"

    def device(self, pe: str) -> FpgaConvDevice:
        """The :class:`~pynq_nbq.kernel.driver.FpgaConvDevice` of the ``pe`` overlay
        (loaded on first use; replaces an overlay of the other kind)."""
        pe = dp.PEKind.parse(pe)
        with self._lock:
            if self._device is not None and self._device.ol.kind == pe:
                return self._device
            if self._device is not None:
                self._device.close()
                self._device = None
            if self.board is not None:
                ol = self.board.load(pe)
            else:
                path = self._driver.bitstream_path(pe, self.source)
                ol = self._driver.load_overlay(pe, path)
            device = self._driver.FpgaConvDevice(ol, self.timeout_s)
            self._device = device
            self._layers = CompiledLayers(device.max_packet_bytes)
            return device

    def check_bundle(self, manifest: Manifest) -> None:
        """Load the bundle's overlay and refuse (ValueError, every reason) what it cannot run
        (``manifest`` is the validated ``bundle.spec``)."""
        check_manifest(manifest, self.device(manifest.pe).info)

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """int16 NHWC in, int16 NHWC out: exactly :func:`pynq_nbq.ops.conv_layer`."""
        dev = self.device(spec.datapath)
        assert self._layers is not None, "device() sets the compiled layers with the device"
        return self._layers.get(spec, dev.info).run(dev, x)

    def close(self) -> None:
        """Free the DMA buffers."""
        with self._lock:
            if self._device is not None:
                self._device.close()
                self._device = None
