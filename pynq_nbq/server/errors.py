"""The service's domain errors: each carries the HTTP status it is answered with.

The service layer raises them; the app maps every one to JSON
``{"error": message, "status": code}`` in a single handler (``routes.py``), so no
route builds an error answer itself.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request; ``status`` is its HTTP code, ``headers`` extra answer headers."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class TooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class Unprocessable(ServiceError):
    status = 422


class Unavailable(ServiceError):
    """503: busy or the device failed; ``retry_after_s`` becomes ``Retry-After``."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class Timeout(ServiceError):
    status = 504
