"""Where the package's log records go, in one format for the terminal and for per-run log files; errors in one line."""

from __future__ import annotations

import logging

PACKAGE_LOGGER = "instanseg_scnp"


def send_package_logs(handler: logging.Handler, level: int) -> None:
    """Route the package's records at ``level`` and above to ``handler`` alone (``HH:MM:SS LEVEL message``)."""
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    package = logging.getLogger(PACKAGE_LOGGER)
    package.handlers[:] = [handler]
    package.setLevel(level)
    package.propagate = False


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of ``error``, for one-line messages that wrap it."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
