"""``usagehub status`` as a person reads it, from what the gateway's /readyz and the streams say."""

from __future__ import annotations

from services.system_status import SystemStatus, render_status

READY = {
    "ready": True,
    "nats": True,
    "postgres": True,
    "pending_migrations": [],
    "ingest": True,
    "projection_lag": {"heartbeat": 0, "links": 3},
    "stuck": {},
    "quarantined": {"heartbeat": 0, "links": 1},
}


def test_a_ready_system_shows_its_address_parts_streams_and_projections() -> None:
    text = render_status(
        SystemStatus(
            url="http://127.0.0.1:8080/",
            ready=True,
            readiness=READY,
            streams={"USAGEHUB_EVENTS": 42},
            positions={"heartbeat": 40, "links": 39},
        )
    )
    lines = text.splitlines()
    assert lines[0] == "usagehub at http://127.0.0.1:8080/  ready"
    assert "  ingest    ok" in lines and "  postgres  ok" in lines
    assert "  stream    USAGEHUB_EVENTS: 42 messages" in lines
    heartbeat = next(line for line in lines if line.lstrip().startswith("heartbeat"))
    assert heartbeat.split() == ["heartbeat", "40", "0", "0"]
    links = next(line for line in lines if line.lstrip().startswith("links"))
    assert links.split() == ["links", "39", "3", "1"]


def test_what_is_down_is_said() -> None:
    readiness = {
        **READY,
        "ready": False,
        "ingest": False,
        "pending_migrations": ["0008_x.sql"],
        "projection_lag": {"heartbeat": None, "links": 20_000},
        "stuck": {"links": 31.5},
    }
    text = render_status(SystemStatus(url="http://h:1/", ready=False, readiness=readiness))
    assert text.startswith("usagehub at http://h:1/  NOT READY\n")
    assert "  ingest    DOWN" in text
    assert "(pending migrations: 0008_x.sql)" in text
    assert "no consumer" in text and "stuck for 31.5 s" in text


def test_a_gateway_that_does_not_answer() -> None:
    text = render_status(
        SystemStatus(url="http://h:1/", ready=False, problem="the gateway at x does not answer")
    )
    assert "  problem: the gateway at x does not answer" in text
    assert "  gateway   DOWN" in text and "  ingest    ?" in text
