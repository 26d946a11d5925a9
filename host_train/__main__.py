"""``python -m host_train ARGS`` = ``nbq train ARGS``; the entry point that
``torchrun --nproc_per_node=N -m host_train ...`` starts in every process."""

import sys

from pynq_nbq.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
