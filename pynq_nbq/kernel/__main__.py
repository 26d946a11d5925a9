"""``python3 -m pynq_nbq.kernel check-header xnbq_conv_hw.h``: verify a Vitis build."""

from .header import main

raise SystemExit(main())
