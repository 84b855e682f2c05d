"""The fuzzer: schemathesis sends every operation of ``/openapi.json`` examples made from the document
itself (valid and invalid ones, and stateful sequences along its links) to a live gateway with
ingest, projector, NATS and Postgres. The gate: no server error, no answer the document does not
describe (status, content type, headers, body), no request left unanswered."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SECRET, Services, admin, gateway, with_settings

# Tuned so the run takes well under three minutes on two cores (FUZZ_EXAMPLES to go further).
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
REQUEST_TIMEOUT = 15  # seconds: longer is a hang (writes answer within the 10 s command timeout)
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


ORG_KEY_CONFIG = """
[[operations]]
include-path = "/api/usage/history"
headers = { "X-Api-Key" = "KEY" }
"""


def summary(output: str) -> str:
    """The lines of schemathesis' report worth keeping in ``make test``'s output."""
    start = output.find("SUMMARY")
    return output[output.rfind("\n", 0, start) + 1 :] if start >= 0 else output[-4000:]


@pytest.mark.timeout(600)
async def test_every_operation_holds_to_the_document(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fuzzer fails authentication on purpose, often: the budget for failures must not turn its
    # later requests into 429s (the limits have their own tests).
    settings = with_settings(services.settings, auth_failure_burst=1_000_000, auth_failures_per_minute=1e9)
    async with gateway(settings) as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        # An org key, so the metering reads get past authentication (the admin key is the other).
        org = {"id": "fuzz", "name": "Fuzz", "time_zone": "UTC"}
        assert (await http.post(f"{base}/api/orgs", json=org, headers=admin())).status == 201
        issued = await http.post(f"{base}/api/orgs/fuzz/keys", headers=admin())
        org_key = (await issued.json())["key"]
        # Only for the route that needs it: the fuzzer, as admin, finds and revokes keys, and a
        # revoked key would make every other route 401 for the rest of the run.
        config = tmp_path / "schemathesis.toml"
        await asyncio.to_thread(config.write_text, ORG_KEY_CONFIG.replace("KEY", org_key))
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--header",
            f"Authorization: {SECRET}",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            # One worker: hypothesis' lambda descriptions call ast.parse, which CPython 3.11 cannot
            # run in two threads at once ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--seed",
            os.environ.get("FUZZ_SEED", "20261126"),
            # The credentials are the ones given here: generated ones would send X-Api-Key and
            # X-Session-Id together, which every metered route refuses before it does anything.
            "--generation-with-security-parameters",
            "false",
            "--generation-database",
            "none",
            "--no-color",
            "--output-sanitize",
            "false",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await proc.communicate()
    output = out.decode(errors="replace")
    if log := os.environ.get("FUZZ_LOG"):  # the whole report, for whoever is fixing what it found
        await asyncio.to_thread(Path(log).write_text, output)
    with capsys.disabled():
        print("\n--- schemathesis (make test's fuzzer) ---\n" + summary(output))
    assert proc.returncode == 0, output[-20_000:]
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", output)
    assert tested is not None and len(set(tested.groups())) == 1, "every operation is fuzzed"
    assert re.search(r"(\d+) generated, \1 passed", output), "every case passed"
