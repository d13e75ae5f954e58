"""The worker's node in the weights swarm (the ``swarm`` transport): started when the first version
comes through the swarm, then kept for the worker's life, so it seeds the version it holds to the
workers that come after it. Its address goes into the worker's registry entry; its peers are the
other live workers' addresses there."""

from __future__ import annotations

import threading

from services.rollout.settings import RolloutSettings
from shared.bus import Keys, WorkerRegistry, connect
from shared.weights.transports.swarm import SwarmNode


class WorkerSwarm:
    def __init__(self, settings: RolloutSettings, token: str | None):
        self.settings = settings
        self.token = token
        self._node: SwarmNode | None = None
        self._lock = threading.Lock()
        self._registry: WorkerRegistry | None = None

    @property
    def address(self) -> str | None:
        """Where peers reach this worker's node; None until a version came through the swarm."""
        return self._node.address if self._node is not None else None

    def _peers(self) -> list[str]:
        if self._registry is None:
            self._registry = WorkerRegistry(connect(self.settings.redis.url), Keys(self.settings.redis.namespace))
        return self._registry.swarm_peers(self.settings.swarm.peer_ttl_s)

    def node(self) -> SwarmNode:
        with self._lock:
            if self._node is None:
                if not self.token:
                    raise ValueError("the swarm transport authenticates peers with the job's token: set auth.token")
                advertise = self.settings.swarm.advertised_host(self.settings.public_base_url())
                self._node = SwarmNode(self.settings.swarm, self.token, self.settings.host, advertise, self._peers)
            return self._node

    def close(self) -> None:
        with self._lock:
            if self._node is not None:
                self._node.close()
                self._node = None
            if self._registry is not None:
                self._registry.client.close()
