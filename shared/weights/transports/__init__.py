"""One module per weight transport backend; ``open_transport`` (a receiver) and ``open_origin`` (the
learner) pick one by the name in the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.weights.settings import TransportName, WeightsSettings
from shared.weights.transport import WeightOrigin, WeightTransport

if TYPE_CHECKING:  # libtorrent (the swarm extra) is imported only by a job that uses the swarm
    from shared.weights.transports.swarm import SwarmNode

def _s3():
    try:
        from shared.weights.transports import s3
    except ModuleNotFoundError as exc:
        raise ValueError(f"the s3 weight transport needs boto3 ({exc}): pip install -e '.[s3]'") from exc
    return s3


NAMES = "http, file, s3, swarm"


def open_transport(
    name: TransportName, token: str | None = None, timeout_s: float = 600.0, swarm: SwarmNode | None = None
) -> WeightTransport:
    """The backend ``name`` (the job's ``weights.transport``, or a record's). ``swarm``: the receiver's
    long-lived swarm node, which the swarm backend fetches through (and keeps seeding from)."""
    if name == "file":
        from shared.weights.transports.file import FileTransport

        return FileTransport()
    if name == "http":
        from shared.weights.transports.http import HttpTransport

        return HttpTransport(token, timeout_s)
    if name == "s3":
        # The store's endpoint and keys come from the standard AWS variables, not the job's token.
        return _s3().S3Transport(timeout_s)
    if name == "swarm":
        if swarm is None:
            raise ValueError("the swarm transport needs a swarm node here: install the swarm extra (libtorrent)")
        from shared.weights.transports.swarm import SwarmTransport

        return SwarmTransport(swarm, token, timeout_s)
    raise ValueError(f"unknown weights transport {name!r} ({NAMES})")


def open_origin(
    settings: WeightsSettings, public_base_url: str, token: str | None = None, listen_host: str = "127.0.0.1"
) -> WeightOrigin:
    """The learner's side of the job's ``weights.transport``; ``public_base_url`` is the learner's API,
    ``token`` the job's (the swarm's peers authenticate with it), ``listen_host`` the interface the
    learner binds."""
    if settings.transport == "file":
        from shared.weights.transports.file import FileOrigin

        return FileOrigin()
    if settings.transport == "http":
        from shared.weights.transports.http import HttpOrigin

        return HttpOrigin(public_base_url)
    if settings.transport == "s3":
        return _s3().S3Origin(settings.s3, public_base_url)
    if settings.transport == "swarm":
        from shared.weights.transports.swarm import SwarmOrigin

        return SwarmOrigin(settings.swarm, public_base_url, token or "", listen_host)
    raise ValueError(f"unknown weights transport {settings.transport!r} ({NAMES})")
