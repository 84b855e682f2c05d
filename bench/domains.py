"""Per-domain benchmarks that ``bench.run`` adds to its summary (beyond heartbeat beats)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

BENCHMARKS: list[Callable[[str, argparse.Namespace], dict[str, Any]]] = []
