"""Simulated hardware for tests and notebooks: never imported by runtime code.

* :mod:`.reference` - a numpy model of one kernel call (``ReferenceDevice``) and a
  call recorder;
* :mod:`.vectors` - test-vector files for the C++ testbench;
* :mod:`.board` - a simulated board (any of ``kernel.design.BOARD_TARGETS``, PS8 or
  PS7) that runs the unmodified ``pynq`` library against the csim kernel behind a
  model of the AXI DMA (:mod:`.dma_model`), loading the ``.hwh`` of :mod:`.hwh`.
"""
