"""NATS over TLS as the prod overlay runs it: a service connects with a tls:// URL, checks the server
against USAGEHUB_NATS_CA_FILE and authenticates as its user; an untrusted certificate stops it with
one line instead of retrying forever."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local import servers
from services.local.servers import free_port, nats_server_binary, secret_file, spawn
from shared.bus import BusRefused, connect
from shared.bus_permissions import ROLES, render_authorization
from shared.settings import Settings


def openssl(args: list[str], cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(where: Path) -> None:
    """A CA and a certificate it signed for localhost (what cert-manager makes in prod)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    signed = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext"]
    (where / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        ["req", "-x509", *key, "-days", "1", "-subj", "/CN=ca", "-keyout", "ca.key", "-out", "ca.crt"], where
    )
    openssl(["req", *key, "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.csr"], where)
    openssl(["x509", "-req", "-in", "tls.csr", *signed, "-out", "tls.crt"], where)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """(tls:// URL, the CA certificate, the gateway's password) of a NATS that requires TLS."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    where = tmp_path_factory.mktemp("nats-tls")
    make_certificates(where)
    passwords = {user: secret_file(where / "credentials" / user) for user in ROLES}
    port = free_port()
    config = where / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f'tls {{ cert_file: "{where}/tls.crt", key_file: "{where}/tls.key", ca_file: "{where}/ca.crt" }}\n'
        + render_authorization(password=lambda user: json.dumps(passwords[user]))
    )
    with open(where / "nats.log", "ab") as log:
        process = spawn([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log)
    try:
        servers._wait_for_port(port, process, "nats-server", 20)
        yield f"tls://localhost:{port}", where / "ca.crt", passwords["gateway"]
    finally:
        process.terminate()
        process.wait(10)


async def test_a_service_connects_with_tls_checked_against_the_ca(tls_server: tuple[str, Path, str]) -> None:
    url, ca, password = tls_server
    settings = Settings(nats_url=url, nats_user="gateway", nats_password=password, nats_ca_file=str(ca))
    nc = await connect(settings, "tls-test")
    try:
        assert nc.is_connected
        await nc.publish("usagehub.commands.Ping", b"{}")
        await nc.flush()
    finally:
        await nc.close()


async def test_a_certificate_the_ca_did_not_sign_is_refused_at_once(
    tls_server: tuple[str, Path, str],
) -> None:
    url, _, password = tls_server
    # Without the CA file the system's CAs are used, and they never signed this server's certificate.
    with pytest.raises(BusRefused, match=r"certificate is not trusted .*: set USAGEHUB_NATS_CA_FILE"):
        await connect(Settings(nats_url=url, nats_user="gateway", nats_password=password), "tls-test")
