"""``nbq bench``: VPE vs SVPE vs CPU-only, measured on a backend, beside the model.

* :mod:`.data` - the labelled images (Fashion-MNIST test set or a folder);
* :mod:`.measure` - timing one model: latency percentiles, the split into
  preprocessing / conv engine / ARM layers / driver, per-layer times, throughput;
* :mod:`.power` - idle and active board power from the rails (server.power's sampler);
* :mod:`.context` - where it ran, the "emulated ..." label, bitstream resources;
* :mod:`.run` - the three columns, accuracy, agreement and the model's predictions;
* :mod:`.report` - Markdown and the PNG chart.

Off the board every timing is labelled "emulated (backend X on host Y), not hardware".
"""
