"""The one error the viewer raises for a bad query; the API turns it into a 400."""

from __future__ import annotations


class ViewerError(Exception):
    """A query the viewer refuses: ``code`` is machine-readable, ``param`` names the
    request parameter at fault (``where``, ``query``, ``offset``…) or is ``None``."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
