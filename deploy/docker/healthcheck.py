"""Container health check for every usagehub service (the slim image has no curl).

Exits 0 when ``GET http://127.0.0.1:<port>/healthz`` answers 200 on one of the given ports, else 1.
Without arguments it tries the gateway's ``USAGEHUB_HTTP_PORT`` and then the ingest/projector
``USAGEHUB_METRICS_PORT`` (defaults 8080 and 9100): a container runs one service, so whichever of
the two it listens on decides.
"""

from __future__ import annotations

import os
import sys
import urllib.request

# Loopback only: never route the check through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def healthy(port: str, timeout: float = 3.0) -> bool:
    try:
        with _OPENER.open(f"http://127.0.0.1:{int(port)}/healthz", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    ports = argv or [
        os.environ.get("USAGEHUB_HTTP_PORT", "8080"),
        os.environ.get("USAGEHUB_METRICS_PORT", "9100"),
    ]
    return 0 if any(healthy(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
