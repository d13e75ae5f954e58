"""``swarm``: a BitTorrent swarm through libtorrent (the ``swarm`` extra). The origin (the learner)
seeds each version's safetensors file, and its delta from the version before where it has one (a
torrent of its own); each worker joins the torrent it takes (the delta when it serves the delta's
base, else the whole version: ``shared.weights.receiver``), fetches pieces from the origin and from
every other worker, and seeds what it holds as long as it lives, so the origin serves about one copy
whatever the fleet size and a joiner needs nothing special.

A piece is a manifest bucket (same size and boundaries), so a receiver checks the manifest's SHA-256
of every bucket (``receive``) on top of libtorrent's own piece hashes. No public tracker, DHT, local
discovery, UPnP or NAT-PMP: the origin's address comes with the torrent, workers' addresses from the
Redis worker registry, and a node ``connect_peer``s them. Rate limits apply to every peer, loopback
and LAN included (libtorrent leaves local peers unlimited unless told otherwise).

Every transfer is authenticated: the torrents are SSL torrents whose root is the job's CA
(swarm_ca.py, derived from the job's token), nodes listen only on TLS and present a certificate that
CA signed, so a node without the token gets no byte; the manifest and the torrent come from the
learner's API behind the token. The ref is the version's manifest URL on the learner (as for
``http``), or its delta's manifest URL; the torrent and the origin's address are beside it
(``shared.api.weights.swarm_url``).

Storage: a worker writes a version's pieces under ``storage_dir`` (/dev/shm by default: memory, the
model's size per version held, twice that while the next one arrives) and deletes a version's files
once a newer one is complete.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import libtorrent as lt
from pydantic import BaseModel, ConfigDict, Field

from shared.api.weights import (
    DELTA_FILE,
    DELTA_SWARM_FILE,
    SWARM_FILE,
    WEIGHTS_FILE,
    DeltaRef,
    delta_manifest_url,
    manifest_url,
    swarm_url,
    weights_url,
)
from shared.weights.manifest import DELTA_MANIFEST_FILE, MANIFEST_FILE, Manifest
from shared.weights.settings import SwarmSettings
from shared.weights.transport import VersionRef, WeightOrigin, WeightTransport
from shared.weights.transports.http import HttpTransport
from shared.weights.transports.swarm_ca import DH_PARAMS, JobAuthority, NodeCertificate

log = logging.getLogger(__name__)

PeerSource = Callable[[], Iterable[str]]  # "host:port" addresses of live nodes


class SwarmOffer(BaseModel):
    """What a worker needs to join a version's swarm, beside the version's manifest on the learner."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0)
    delta: bool = False  # the torrent is of the version's delta (DELTA_FILE), not of its safetensors file
    torrent: str  # the bencoded SSL torrent, base64
    seeds: list[str]  # "host:port" of the nodes that hold the whole version (the origin)

    def torrent_bytes(self) -> bytes:
        return base64.b64decode(self.torrent)

    @property
    def key(self) -> Key:
        return self.version, self.delta


# A torrent a node takes part in: a version's file (False) or its delta (True).
Key = tuple[int, bool]


@dataclass(frozen=True)
class SwarmLimits:
    upload_bps: int = 0  # bytes/s per node, 0: unlimited
    download_bps: int = 0
    upload_slots: int = 8  # peers a node uploads to at once (unchoke slots)

    @classmethod
    def of(cls, settings: SwarmSettings) -> SwarmLimits:
        return cls(int(settings.upload_mb_s * 1e6), int(settings.download_mb_s * 1e6), settings.upload_slots)


def parse_address(address: str) -> tuple[str, int]:
    """The endpoint of a "host:port" address; libtorrent connects to IP addresses only, so a name
    (a compose service, a pod's DNS name) is resolved here. OSError when it does not resolve."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a swarm address is host:port, not {address!r}")
    resolved = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    return resolved[0][4][0], int(port)


def open_session(host: str, port: int, limits: SwarmLimits, ssl: bool = False) -> lt.session:
    """A session listening on ``host:port`` (0: any free port); ``ssl``: on TLS only, so no peer
    without a certificate of the torrent's root gets anything (the ``swarm`` backend's nodes)."""
    session = lt.session(
        {
            "listen_interfaces": f"{host}:{port}{'s' if ssl else ''}",
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
            # A peer introduced before it joined the version refused us; try it again soon (default 60 s).
            "min_reconnect_time": 1,
            "alert_mask": lt.alert.category_t.error_notification,
        }
    )
    # Every address in the global peer class, so the rate limits hold on loopback and LAN too.
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(everyone)
    return session


def make_torrent(path: Path, manifest: Manifest, root_certificate: str | None = None) -> bytes:
    """The bencoded torrent of a version's file, one piece per manifest bucket; with
    ``root_certificate`` (PEM) an SSL torrent: only peers with a certificate it signed take part."""
    piece = manifest.bucket_bytes
    if piece < 16 << 10 or piece & (piece - 1):
        raise ValueError(f"the swarm needs a bucket size that is a power of two of at least 16 KiB, not {piece}")
    torrent = lt.create_torrent(lt.list_files(str(path)), piece)
    if root_certificate is not None:
        torrent.set_root_cert(root_certificate)
    lt.set_piece_hashes(torrent, str(path.parent))
    return lt.bencode(torrent.generate())


def join(
    session: lt.session, torrent: bytes, save_path: Path, seed: bool = False, exchange_peers: bool = True,
    certificate: NodeCertificate | None = None,
) -> lt.torrent_handle:
    """Add a version's torrent: ``seed`` when the file is already complete there (the origin);
    ``certificate`` for an SSL torrent."""
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    params.save_path = str(save_path)
    if seed:
        # (Not super-seeding: measured, it slowed a single receiver from 6 s to 26 s.)
        params.flags |= lt.torrent_flags.seed_mode
    if not exchange_peers:
        params.flags |= lt.torrent_flags.disable_pex
    handle = session.add_torrent(params)
    if certificate is not None:
        handle.set_ssl_certificate_buffer(certificate.certificate, certificate.private_key, DH_PARAMS)
    return handle


@dataclass
class _Joined:
    handle: lt.torrent_handle
    directory: Path
    owned: bool  # the files are ours to delete (a worker's copy, not the learner's store)
    met: set[str] = field(default_factory=set)  # addresses already introduced


class SwarmNode:
    """One libtorrent session, authenticated with the job's CA, for as long as its process lives: the
    learner's (seeding every published version) or a worker's (joining each version it takes and
    seeding it to later peers). ``peers`` gives the addresses of the other live nodes (the registry);
    a thread introduces them to every version held and hands over pieces read for ``read``."""

    def __init__(
        self,
        settings: SwarmSettings,
        token: str,
        listen_host: str,
        advertise_host: str,
        peers: PeerSource = tuple,
    ):
        self.settings = settings
        self.authority = JobAuthority(token)
        self.certificate = self.authority.issue_node()
        self.session = open_session(listen_host, settings.port, SwarmLimits.of(settings), ssl=True)
        port = self.session.ssl_listen_port()
        if not port:
            raise OSError(f"the swarm node cannot listen on {listen_host}:{settings.port}")
        self.address = f"{advertise_host}:{port}"
        self.peers = peers
        self._storage: Path | None = None
        self._joined: dict[Key, _Joined] = {}
        self._reads: dict[tuple[str, int], concurrent.futures.Future[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._peers_failing = False
        # Two threads: a registry that answers slowly must not hold up the pieces a receiver waits for.
        self._threads = [threading.Thread(target=self._pump, name="swarm-alerts", daemon=True),
                         threading.Thread(target=self._meet, name="swarm-peers", daemon=True)]
        for thread in self._threads:
            thread.start()

    # ---------------------------------------------------------------- versions

    def seed(self, version: int, torrent: bytes, directory: Path, delta: bool = False) -> lt.torrent_handle:
        """Seed ``version`` (its delta with ``delta``), whose complete file is in ``directory`` (the
        learner's store)."""
        handle = join(self.session, torrent, directory, seed=True, certificate=self.certificate)
        with self._lock:
            self._joined[version, delta] = _Joined(handle, directory, owned=False)
        return handle

    def take(self, offer: SwarmOffer) -> lt.torrent_handle:
        """Join the offer's torrent (once) and meet its seeds; pieces arrive in the background."""
        with self._lock:
            joined = self._joined.get(offer.key)
            if joined is None:
                if self._storage is None:
                    size = lt.torrent_info(lt.bdecode(offer.torrent_bytes())).total_size()
                    self._storage = self._make_storage(size)
                directory = self._storage / (f"v{offer.version}-delta" if offer.delta else f"v{offer.version}")
                directory.mkdir(parents=True, exist_ok=True)
                handle = join(self.session, offer.torrent_bytes(), directory, certificate=self.certificate)
                joined = self._joined[offer.key] = _Joined(handle, directory, owned=True)
            addresses = [a for a in offer.seeds if a not in joined.met]
            joined.met.update(addresses)
        for address in addresses:
            joined.handle.connect_peer(parse_address(address))
        self._wake.set()  # meet the registry's peers now, not at the next round
        return joined.handle

    def _make_storage(self, version_bytes: int) -> Path:
        root = self.settings.storage_dir
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        elif Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 2 * version_bytes:
            root = "/dev/shm"  # two versions at a time (a container's default 64 MB holds no model: temp dir)
        return Path(tempfile.mkdtemp(prefix="prft-swarm-", dir=root))

    def drop(self, version: int) -> None:
        """Stop taking part in ``version``'s swarms (its file's and its delta's); a worker's copies are
        deleted."""
        with self._lock:
            dropped = [self._joined.pop(key) for key in [(version, False), (version, True)] if key in self._joined]
        for joined in dropped:
            self.session.remove_torrent(joined.handle)
            if joined.owned:
                shutil.rmtree(joined.directory, ignore_errors=True)

    def hold(self, version: int) -> None:
        """``version`` is complete here (whole or by its delta): stop seeding (and delete) the older ones."""
        with self._lock:
            older = {v for (v, _), joined in self._joined.items() if v < version and joined.owned}
        for old in older:
            self.drop(old)

    def versions(self) -> list[int]:
        with self._lock:
            return sorted({version for version, _ in self._joined})

    def introduced(self, version: int, delta: bool = False) -> set[str]:
        """The addresses introduced to a torrent this node takes part in (its seeds included)."""
        with self._lock:
            joined = self._joined.get((version, delta))
            return set(joined.met) if joined is not None else set()

    def handle(self, version: int, delta: bool = False) -> lt.torrent_handle | None:
        with self._lock:
            joined = self._joined.get((version, delta))
        return joined.handle if joined is not None else None

    def read(self, handle: lt.torrent_handle, piece: int) -> concurrent.futures.Future[bytes]:
        """Piece ``piece`` as libtorrent holds it (through its disk cache, not behind it)."""
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        with self._lock:
            self._reads[(str(handle.info_hash()), piece)] = future
        handle.read_piece(piece)
        return future

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for version in self.versions():
            self.drop(version)
        if self._storage is not None:
            shutil.rmtree(self._storage, ignore_errors=True)
        self.session.pause()
        with self._lock:
            for future in self._reads.values():
                future.cancel()
            self._reads.clear()

    # ---------------------------------------------------------------- the node's thread

    def _introduce(self) -> None:
        try:
            addresses = {a for a in self.peers() if a != self.address}
        except Exception as exc:  # the registry is away: keep the peers met so far
            if not self._peers_failing:
                log.warning("swarm peers unavailable (retrying): %s", exc)
            self._peers_failing = True
            return
        self._peers_failing = False
        with self._lock:
            joined = list(self._joined.values())
        for entry in joined:
            # Up to max_peers live ones; a peer met that has left the registry makes room for another.
            room = self.settings.max_peers - len(entry.met & addresses)
            unmet = sorted(addresses - entry.met)
            for address in random.sample(unmet, max(0, min(room, len(unmet)))):
                try:
                    entry.handle.connect_peer(parse_address(address))
                except (ValueError, RuntimeError, OSError) as exc:
                    log.warning("swarm peer %s: %s", address, exc)
                    continue
                entry.met.add(address)

    def _meet(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.settings.introduce_interval_s)
            self._wake.clear()
            if not self._closed.is_set():
                self._introduce()

    def _pump(self) -> None:
        while not self._closed.is_set():
            self.session.wait_for_alert(100)
            for alert in self.session.pop_alerts():
                if isinstance(alert, lt.read_piece_alert):
                    with self._lock:
                        future = self._reads.pop((str(alert.handle.info_hash()), alert.piece), None)
                    if future is None or future.done():
                        continue
                    if alert.error.value():
                        future.set_exception(OSError(f"reading piece {alert.piece}: {alert.error.message()}"))
                    else:
                        future.set_result(bytes(alert.buffer))
                elif isinstance(alert, lt.torrent_error_alert):
                    log.warning("swarm: %s", alert.message())


# ---------------------------------------------------------------- the learner's side


class SwarmOrigin(WeightOrigin):
    """The learner seeds every version it keeps; the torrent and its own address go beside the
    version's manifest (``swarm.json``), which the learner's API serves behind the token."""

    name = "swarm"
    served_by_learner = True  # the learner's API serves the offer and its session is the first seed

    def __init__(self, settings: SwarmSettings, public_base_url: str, token: str, listen_host: str):
        self.public_base_url = public_base_url
        self.node = SwarmNode(settings, token, listen_host, settings.advertised_host(public_base_url))
        self._root = self.node.authority.root_certificate()

    def publish(self, version: int, directory: Path) -> VersionRef:
        self._offer(version, directory, delta=False)
        delta = None
        if (directory / DELTA_MANIFEST_FILE).is_file():
            base = self._offer(version, directory, delta=True).delta.base_version
            delta = DeltaRef(base_version=base, manifest=delta_manifest_url(self.public_base_url, version))
        return VersionRef(uri=weights_url(self.public_base_url, version),
                          manifest=manifest_url(self.public_base_url, version), delta=delta)

    def _offer(self, version: int, directory: Path, delta: bool) -> Manifest:
        """Seed the version's file (or its delta) and write its offer where the learner's API serves it;
        the file's manifest."""
        manifest_file, data_file, offer_file = (
            (DELTA_MANIFEST_FILE, DELTA_FILE, DELTA_SWARM_FILE) if delta else (MANIFEST_FILE, WEIGHTS_FILE, SWARM_FILE)
        )
        manifest = Manifest.model_validate_json((directory / manifest_file).read_text())
        torrent = make_torrent(directory / data_file, manifest, self._root)
        offer = SwarmOffer(version=version, delta=delta, torrent=base64.b64encode(torrent).decode(),
                           seeds=[self.node.address])
        tmp = directory / (offer_file + ".tmp")
        tmp.write_text(offer.model_dump_json())
        tmp.replace(directory / offer_file)
        self.node.seed(version, torrent, directory, delta=delta)
        return manifest

    def retire(self, version: int) -> None:
        self.node.drop(version)

    def close(self) -> None:
        self.node.close()


# ---------------------------------------------------------------- a worker's side


class SwarmTransport(WeightTransport):
    """A receiver over the worker's long-lived ``SwarmNode`` (closing the transport leaves the node
    seeding). The manifest and the offer come from the learner's API with the token."""

    name = "swarm"

    def __init__(self, node: SwarmNode, token: str | None, timeout_s: float = 600.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.node = node
        self.timeout_s = timeout_s
        self._http = HttpTransport(token, timeout_s, transport=transport)
        self._handles: dict[str, asyncio.Task[lt.torrent_handle]] = {}

    async def manifest(self, ref: str) -> Manifest:
        return await self._http.manifest(ref)

    async def _take(self, ref: str, manifest: Manifest) -> lt.torrent_handle:
        offer = SwarmOffer.model_validate_json(await self._http.content(swarm_url(ref)))
        if offer.key != (manifest.version, manifest.delta is not None):
            what = f"v{manifest.version}" + ("'s delta" if manifest.delta is not None else "")
            raise ValueError(f"the swarm offer at {swarm_url(ref)} is not of {what} (version, delta: {offer.key})")
        info = lt.torrent_info(lt.bdecode(offer.torrent_bytes()))
        if (info.piece_length(), info.num_pieces(), info.total_size()) != (
            manifest.bucket_bytes, len(manifest.buckets), manifest.total_bytes
        ):
            raise ValueError(f"the torrent of v{offer.version} does not cut the file as its manifest does")
        return await asyncio.to_thread(self.node.take, offer)

    async def bucket(self, ref: str, manifest: Manifest, index: int) -> bytes:
        if ref not in self._handles:
            self._handles[ref] = asyncio.ensure_future(self._take(ref, manifest))
        handle = await self._handles[ref]
        deadline = time.monotonic() + self.timeout_s
        while not handle.have_piece(index):
            status = handle.status()
            if status.errc.value():
                raise OSError(f"swarm v{manifest.version}: {status.errc.message()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"swarm v{manifest.version}: bucket {index} not received in {self.timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        data = await asyncio.wrap_future(self.node.read(handle, index))
        if handle.status().is_seeding:
            self.node.hold(manifest.version)
        return data

    async def close(self) -> None:
        for task in self._handles.values():
            task.cancel()
        await asyncio.gather(*self._handles.values(), return_exceptions=True)
        await self._http.close()
