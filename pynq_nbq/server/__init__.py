"""``nbq serve``: the HTTP image classification service (Flask + waitress).

:func:`create_app` builds the application from a :class:`ServerConfig`; the device
thread, the bounded queue, deadlines, memory bounds and power sampling are described
in ``docs/server.md``.
"""

from __future__ import annotations

from .app import create_app
from .config import ServerConfig, is_loopback

__all__ = ["ServerConfig", "create_app", "is_loopback"]
