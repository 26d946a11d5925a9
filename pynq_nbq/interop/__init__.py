"""Exchanging models with the QONNX ecosystem (Brevitas, FINN, hls4ml, qonnx).

* :mod:`.qonnx_export` - a validated bundle -> a QONNX graph (``onnx.ModelProto``) that
  states the same integer datapath with ``Quant`` nodes.
* :mod:`.qonnx_import` - a QONNX graph whose weights are powers of two (svpe) or 16-bit
  integers (vpe) -> a bundle; everything the datapath cannot run is refused by node name.
  Its parts: :mod:`.qonnx_nodes` (the error, activation records, attribute readers),
  :mod:`.qonnx_weights` (constant weights and their integer grid), :mod:`.qonnx_graph`
  (one import's state and activation ``Quant`` formats), :mod:`.qonnx_chain` (a layer's
  affine chain folded to its output ``Quant``), :mod:`.qonnx_weighted` (Conv/Gemm/MatMul
  -> conv/linear), :mod:`.qonnx_ops` (the other per-op handlers), :mod:`.qonnx_assemble`
  (svpe/vpe arrays and the manifest).
* :mod:`.peers` - run a QONNX graph with the ``qonnx`` executor or hls4ml's C++ emulation
  (optional packages, imported lazily).

Only ``onnx`` (and numpy) is needed to export and import; see ``docs/interop.md``.
"""
