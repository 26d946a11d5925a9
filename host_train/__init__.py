"""Workstation side of pynq-nbq (needs torch): quantizer maths, power-of-two layers,
models, data, the training loop, evaluation and export to the board's model bundle."""
