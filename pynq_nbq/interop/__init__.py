"""Exchanging models with the QONNX ecosystem (Brevitas, FINN, hls4ml, qonnx).

* :mod:`.qonnx_export` - a validated bundle -> a QONNX graph (``onnx.ModelProto``) that
  states the same integer datapath with ``Quant`` nodes.
* :mod:`.qonnx_import` - a QONNX graph whose weights are powers of two (svpe) or 16-bit
  integers (vpe) -> a bundle; everything the datapath cannot run is refused by node name.
* :mod:`.peers` - run a QONNX graph with the ``qonnx`` executor or hls4ml's C++ emulation
  (optional packages, imported lazily).

Only ``onnx`` (and numpy) is needed to export and import; see ``docs/interop.md``.
"""
