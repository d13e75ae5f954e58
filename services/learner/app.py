"""The learner's HTTP API (rank 0 only): status, weight files for workers that pull, Prometheus metrics,
and, for a learner held at its start (``learner.start_on_request``), the call that lets it go."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.learner.metrics import StepMetrics
from services.learner.weights import WeightStore
from shared.api.learner import START_ROUTE
from shared.api.weights import (
    BUCKET_ROUTE,
    DELTA_BUCKET_ROUTE,
    DELTA_MANIFEST_ROUTE,
    DELTA_SWARM_FILE,
    DELTA_SWARM_ROUTE,
    MANIFEST_ROUTE,
    SWARM_FILE,
    SWARM_ROUTE,
    WEIGHTS_ROUTE,
    bearer_guard,
)
from shared.records import LearnerStatus

log = logging.getLogger(__name__)


class StatusSource:
    """What ``/v1/status`` serves: only the phase "starting" until rank 0's loop is built (the server
    is up before the slow engine start), then the loop's own status."""

    def __init__(self) -> None:
        self._read: Callable[[], LearnerStatus] = lambda: LearnerStatus(phase="starting")

    def attach(self, read: Callable[[], LearnerStatus]) -> None:
        self._read = read

    def __call__(self) -> LearnerStatus:
        return self._read()


def create_app(
    status: Callable[[], LearnerStatus],
    store: WeightStore,
    metrics: StepMetrics,
    token: str,
    start_gate: threading.Event | None = None,
) -> FastAPI:
    """``token``: the job's bearer token; weights are served only to a request that presents it (the
    model is the job's most valuable output), and an empty one serves them to nobody. ``start_gate``:
    set by ``POST /v1/start`` (``learner.start_on_request``; None: training starts by itself)."""
    app = FastAPI(title="Prefix-RFT learner")
    authorised = bearer_guard(token, "weight downloads are disabled: the learner", HTTPException)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    # Fields not set (all but the phase while starting) are left out rather than served as null.
    @app.get("/v1/status", response_model=LearnerStatus, response_model_exclude_unset=True)
    def get_status() -> LearnerStatus:
        return status()

    if start_gate is not None:  # else the API changes nothing

        @app.post(START_ROUTE, dependencies=[Depends(authorised)])
        def start() -> dict:
            """Let the held learner start training (idempotent)."""
            start_gate.set()
            return {"started": True}

    @app.get(WEIGHTS_ROUTE, dependencies=[Depends(authorised)])
    def get_weights(version: int) -> FileResponse:
        path = store.file(version)
        if not path.is_file():
            raise HTTPException(404, f"weights version {version} are not available (kept: {store.versions()})")
        return FileResponse(path, media_type="application/octet-stream", filename=f"v{version}-{path.name}")

    @app.get(MANIFEST_ROUTE, dependencies=[Depends(authorised)])
    def get_manifest(version: int) -> Response:
        return json_file(store.manifest_file(version), f"no manifest for weights version {version}")

    @app.get(SWARM_ROUTE, dependencies=[Depends(authorised)])
    def get_swarm(version: int) -> Response:
        """The version's torrent and seed (the swarm transport), beside its manifest."""
        return json_file(store.directory(version) / SWARM_FILE, f"weights version {version} are not in a swarm")

    @app.get(DELTA_SWARM_ROUTE, dependencies=[Depends(authorised)])
    def get_delta_swarm(version: int) -> Response:
        """The torrent and seed of the version's delta, beside the delta's manifest."""
        return json_file(store.directory(version) / DELTA_SWARM_FILE,
                         f"weights version {version} has no delta in a swarm")

    @app.get(BUCKET_ROUTE, dependencies=[Depends(authorised)])
    def get_bucket(version: int, index: int) -> Response:
        return bucket(version, index, delta=False)

    @app.get(DELTA_MANIFEST_ROUTE, dependencies=[Depends(authorised)])
    def get_delta_manifest(version: int) -> Response:
        return json_file(store.delta_manifest_file(version), f"weights version {version} has no delta")

    def json_file(path: Path, missing: str) -> Response:
        """A JSON file of the store (a manifest, a swarm offer); 404 saying ``missing`` and what is kept."""
        if not path.is_file():
            raise HTTPException(404, f"{missing} (kept: {store.versions()})")
        return Response(path.read_bytes(), media_type="application/json")

    @app.get(DELTA_BUCKET_ROUTE, dependencies=[Depends(authorised)])
    def get_delta_bucket(version: int, index: int) -> Response:
        return bucket(version, index, delta=True)

    def bucket(version: int, index: int, delta: bool) -> Response:
        try:
            data = store.read_bucket(version, index, delta)
        except FileNotFoundError:
            what = "has no delta" if delta else "are not available"
            raise HTTPException(404, f"weights version {version} {what} (kept: {store.versions()})") from None
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(data, media_type="application/octet-stream")

    @app.get("/metrics")
    def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


class BackgroundServer:
    """uvicorn on a daemon thread, so the training loop keeps the main thread (and its signals)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)  # off the main thread it leaves signal handlers alone
        self.thread = threading.Thread(target=self.server.run, name="learner-http", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the learner's HTTP server failed to start (port in use?)")
            if time.monotonic() > deadline:
                raise TimeoutError("the learner's HTTP server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
