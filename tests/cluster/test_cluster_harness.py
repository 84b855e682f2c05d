"""The fault tests' own harness: a NATS cluster whose port was taken between ``free_port`` finding
it free and the node binding it starts anyway, on other ports (it once failed a run with "no
JetStream meta leader within 60 s")."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cluster.harness import NatsCluster


async def test_a_cluster_starts_when_a_port_is_taken_under_it(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path)
    taken = cluster.nodes[1].client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            await cluster.start()
            assert cluster.nodes[1].client_port != taken
            assert all(node.running for node in cluster.nodes)
            assert await cluster.wait_for_meta_leader(5)
        finally:
            cluster.stop()
