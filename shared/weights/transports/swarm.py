"""``swarm``: a BitTorrent swarm through libtorrent (the ``swarm`` extra). The origin seeds a version's
safetensors file; each receiver joins the version's torrent, fetches pieces from the origin and from
every other receiver, and seeds what it holds, so the origin serves about one copy whatever the fleet
size and a joiner needs nothing special.

A piece is a manifest bucket (same size and boundaries), so a receiver checks the manifest's SHA-256
of every bucket on top of libtorrent's own piece hashes. No public tracker, DHT, local discovery,
UPnP or NAT-PMP: peers are introduced by the job (``connect_peer`` with addresses from a registry).
Rate limits apply to every peer, loopback and LAN included (libtorrent leaves local peers unlimited
unless told otherwise).

What is not here yet: the worker-side ``WeightTransport`` wiring (the fleet benchmark drives these
primitives directly) and peer authentication (libtorrent's SSL torrents would give it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from shared.weights.manifest import Manifest


@dataclass(frozen=True)
class SwarmLimits:
    upload_bps: int = 0  # bytes/s per node, 0: unlimited
    download_bps: int = 0
    upload_slots: int = 8  # peers a node uploads to at once (unchoke slots)


def open_session(host: str, port: int, limits: SwarmLimits) -> lt.session:
    session = lt.session(
        {
            "listen_interfaces": f"{host}:{port}",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,  # several workers per host (and the bench: per IP)
            "upload_rate_limit": limits.upload_bps,
            "download_rate_limit": limits.download_bps,
            "unchoke_slots_limit": limits.upload_slots,
            # A version lives seconds, not hours: re-choose whom to upload to every second (libtorrent's
            # 15 s and 30 s suit long downloads), so a joiner or a finished peer is used at once.
            "unchoke_interval": 1,
            "optimistic_unchoke_interval": 2,
            "alert_mask": 0,
        }
    )
    # Every address in the global peer class, so the rate limits hold on loopback and LAN too.
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(everyone)
    return session


def make_torrent(path: Path, manifest: Manifest) -> bytes:
    """The bencoded torrent of a version's file, one piece per manifest bucket."""
    piece = manifest.bucket_bytes
    if piece < 16 << 10 or piece & (piece - 1):
        raise ValueError(f"the swarm needs a bucket size that is a power of two of at least 16 KiB, not {piece}")
    torrent = lt.create_torrent(lt.list_files(str(path)), piece)
    lt.set_piece_hashes(torrent, str(path.parent))
    return lt.bencode(torrent.generate())


def join(
    session: lt.session, torrent: bytes, save_path: Path, seed: bool = False, exchange_peers: bool = True
) -> lt.torrent_handle:
    """Add a version's torrent: ``seed`` when the file is already complete there (the origin)."""
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    params.save_path = str(save_path)
    if seed:
        # (Not super-seeding: measured, it slowed a single receiver from 6 s to 26 s.)
        params.flags |= lt.torrent_flags.seed_mode
    if not exchange_peers:
        params.flags |= lt.torrent_flags.disable_pex
    return session.add_torrent(params)
