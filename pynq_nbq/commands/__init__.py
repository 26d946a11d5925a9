"""Subcommands of ``nbq``; see :mod:`pynq_nbq.cli`."""
