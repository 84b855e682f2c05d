"""Fixtures of the fault tests: usagehub in its production shape on loopback, and the figures each
test measures. The figures are printed in pytest's terminal summary (so they show with or without
``-s``, for passed and failed tests alike) and recorded as the test's junit properties."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Usagehub, running_usagehub
from tests.cluster.load import Load, set_up

FIGURES: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest, record_property: Any) -> Iterator[dict[str, Any]]:
    """What the test measured, filled in by the test."""
    measured: dict[str, Any] = {}
    yield measured
    FIGURES.append((request.node.name, measured))
    for name, value in measured.items():
        record_property(name, value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("=", "usagehub cluster: figures measured")
    for test, measured in FIGURES:
        terminalreporter.write_line(f"{test}:")
        for name, value in measured.items():
            terminalreporter.write_line(f"    {name}: {value}")


@pytest.fixture
async def usagehub(tmp_path: Path, database_url: str) -> AsyncIterator[Usagehub]:
    """Three NATS servers, two gateways, two ingests, two projectors; a fresh database."""
    async with running_usagehub(tmp_path, database_url) as running:
        yield running


@pytest.fixture
async def load(usagehub: Usagehub) -> AsyncIterator[Load]:
    """A load (not yet started) on both gateways, with its devices and link set up."""
    tokens, link_id = await set_up(usagehub.gateways[0], usagehub.secret)
    running = Load(usagehub.gateways, tokens, link_id)
    yield running
    if running.started and not running.stopped:
        await running.stop()
