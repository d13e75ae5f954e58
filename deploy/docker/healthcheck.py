#!/usr/bin/env python3
"""Docker HEALTHCHECK for any of the three services: exit 0 when the health URL answers 200.

The URL is the first argument, else $HEALTHCHECK_URL, else the /healthz of whichever default
port answers (8000 rollout, 8001 reward, 8002 learner): one container runs one service, so one
image-level check fits all three without knowing which it is.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URLS = tuple(f"http://127.0.0.1:{port}/healthz" for port in (8000, 8001, 8002))


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    explicit = argv[1] if len(argv) > 1 else os.environ.get("HEALTHCHECK_URL")
    urls = (explicit,) if explicit else DEFAULT_URLS
    return 0 if any(healthy(url) for url in urls) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
