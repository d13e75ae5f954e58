"""One module per weight transport backend; ``open_transport`` picks one by the name in the settings."""

from __future__ import annotations

from shared.weights.settings import TransportName
from shared.weights.transport import WeightTransport


def open_transport(name: TransportName, token: str | None = None, timeout_s: float = 600.0) -> WeightTransport:
    """The backend ``name`` (the job's ``weights.transport``, or a record's)."""
    if name == "file":
        from shared.weights.transports.file import FileTransport

        return FileTransport()
    if name == "http":
        from shared.weights.transports.http import HttpTransport

        return HttpTransport(token, timeout_s)
    raise ValueError(f"unknown weights transport {name!r} (http, file)")
