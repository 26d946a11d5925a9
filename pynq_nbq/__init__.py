"""pynq-nbq: run n-bit power-of-two ("shift") neural networks on Zynq FPGAs.

This package never imports torch: it is what the board installs.
"""

__version__ = "0.1.0"
