"""The conv kernel as the host sees it: its block design, protocol, tiles and driver.

* :mod:`.design` - the block design (cells, VLNVs, DMA parameters, addresses);
* :mod:`.protocol` - registers, FLAGS/STATUS bits, the status word, ``ConvDevice``;
* :mod:`.packing` - items <-> stream words (one implementation for csim and fpga);
* :mod:`.checks` - check before use: can the kernel run this layer / bundle?
* :mod:`.tiles` - cut a layer into calls within the kernel's limits;
* :mod:`.scheduler` - compile a layer once, run it on a ``ConvDevice``;
* :mod:`.header` - ``hls/nbq_params.h`` and Vitis's register header
  (``python3 -m pynq_nbq.kernel check-header xnbq_conv_hw.h``);
* :mod:`.axi_dma` - the AXI DMA's registers (PG021);
* :mod:`.driver` - the board driver on ``pynq`` (imported only by the fpga backend).
"""
