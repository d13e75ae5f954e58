"""One module per weight transport backend; ``open_transport`` (a receiver) and ``open_origin`` (the
learner) pick one by the name in the settings."""

from __future__ import annotations

from shared.weights.settings import TransportName, WeightsSettings
from shared.weights.transport import WeightOrigin, WeightTransport


def _s3():
    try:
        from shared.weights.transports import s3
    except ModuleNotFoundError as exc:
        raise ValueError(f"the s3 weight transport needs boto3 ({exc}): pip install -e '.[s3]'") from exc
    return s3


def open_transport(name: TransportName, token: str | None = None, timeout_s: float = 600.0) -> WeightTransport:
    """The backend ``name`` (the job's ``weights.transport``, or a record's)."""
    if name == "file":
        from shared.weights.transports.file import FileTransport

        return FileTransport()
    if name == "http":
        from shared.weights.transports.http import HttpTransport

        return HttpTransport(token, timeout_s)
    if name == "s3":
        # The store's endpoint and keys come from the standard AWS variables, not the job's token.
        return _s3().S3Transport(timeout_s)
    raise ValueError(f"unknown weights transport {name!r} (http, file, s3)")


def open_origin(settings: WeightsSettings, public_base_url: str) -> WeightOrigin:
    """The learner's side of the job's ``weights.transport``; ``public_base_url`` is the learner's API."""
    if settings.transport == "file":
        from shared.weights.transports.file import FileOrigin

        return FileOrigin()
    if settings.transport == "http":
        from shared.weights.transports.http import HttpOrigin

        return HttpOrigin(public_base_url)
    if settings.transport == "s3":
        return _s3().S3Origin(settings.s3, public_base_url)
    raise ValueError(f"unknown weights transport {settings.transport!r} (http, file, s3)")
