"""Serve the reward service with uvicorn (``prefix-rft reward`` and ``python -m services.reward``)."""

from __future__ import annotations

import uvicorn

from services.reward.app import create_app
from services.reward.settings import RewardSettings


def serve(settings: RewardSettings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )


run = serve
