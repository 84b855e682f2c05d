"""The media-usage API through HTTP: the seed's documents reproduced from events, every route and
status code, validation with nothing written, deletes and status changes, and followable links."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from services.gateway import keys
from services.gateway.app import init_app
from services.local.servers import free_port
from shared.bus import EVENTS_STREAM
from shared.settings import MAX_PRINT_KB, Settings
from tests.conftest import SECRET, Services, admin, with_settings
from tests.media_bodies import CONTENT, DIGITAL_METADATA, MEDIA, PRINT_METADATA, digital, print_record

Client = TestClient[web.Request, web.Application]
ARGO = "application/vnd.argo+json"
SEED_USAGE_ID = f"composer/{CONTENT}_87ad7407a9caef288eb1d34c16cc4735"
SEED_HOST = "https://media-usage.tools.example.com"
SEED_MEDIA_API = "https://api.media.tools.example.com"
ISO_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
USAGE_ID = re.compile(r"^composer/" + CONTENT + r"_[0-9a-f]{32}$")

FRONTEND = {"type": "frontend", "uri": f"http://www.example.com/global/{CONTENT}"}
COMPOSER = {"type": "composer", "uri": f"https://composer.tools.example.com/content/{CONTENT}"}
# The seed's two response examples (../shared/seeds/003_*.txt), as documented.
SEED_USAGE = {
    "id": SEED_USAGE_ID,
    "references": [FRONTEND, COMPOSER],
    "platform": "digital",
    "media": "image",
    "status": "pending",
    "digitalUsageMetadata": DIGITAL_METADATA,
    "dateAdded": "2015-11-27T15:56:51Z",
    "lastModified": "2015-11-30T12:07:14Z",
}
SEED_BY_MEDIA = {
    "uri": f"{SEED_HOST}/usages/media/{MEDIA}",
    "length": 1,
    "data": [
        {
            "uri": f"{SEED_HOST}/usages/composer%2F{CONTENT}_87ad7407a9caef288eb1d34c16cc4735",
            "data": SEED_USAGE,
        }
    ],
    "links": [{"rel": "media", "href": f"{SEED_MEDIA_API}/images/{MEDIA}"}],
}
SEED_BY_USAGE = {
    "uri": f"{SEED_HOST}/usages/composer%2F{CONTENT}_87ad7407a9caef288eb1d34c16cc4735",
    "data": {**SEED_USAGE, "references": [{**FRONTEND, "name": "Some Headline"}, COMPOSER]},
    "links": [
        {"rel": "media", "href": f"{SEED_MEDIA_API}/images/{MEDIA}"},
        {"rel": "media-usage", "href": f"{SEED_HOST}/usages/media/{MEDIA}"},
    ],
}


@pytest.fixture
async def stub_media_api() -> AsyncIterator[str]:
    """A media API elsewhere that knows every image, so ``media`` links can be followed."""

    async def image(request: web.Request) -> web.Response:
        return web.json_response({"data": {"id": request.match_info["id"]}})

    app = web.Application()
    app.router.add_get("/images/{id}", image)
    server = TestServer(app)
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def public_settings(settings: Settings, **more: object) -> tuple[Settings, int]:
    port = free_port()
    return with_settings(settings, public_url=f"http://127.0.0.1:{port}", **more), port


@pytest.fixture
async def client(services: Services, stub_media_api: str) -> AsyncIterator[Client]:
    """The gateway on a known port, its public URL pointing at itself and the media API at the stub."""
    settings, port = public_settings(services.settings, media_api_url=stub_media_api)
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as c:
        yield c


def base(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


def media_api(client: Client) -> str:
    return client.app[keys.SETTINGS].media_api_base_url


async def argo_body(resp: aiohttp.ClientResponse, status: int) -> Any:
    assert resp.status == status, await resp.text()
    assert resp.content_type == ARGO
    return await resp.json(content_type=ARGO)


async def error(resp: aiohttp.ClientResponse, status: int, key: str) -> str:
    body = await argo_body(resp, status)
    assert set(body) == {"errorKey", "errorMessage"}, body
    assert body["errorKey"] == key, body
    return str(body["errorMessage"])


async def post(client: Client, path: str, body: Any, status: int = 202, **headers: str) -> None:
    resp = await client.post(path, json=body, headers=admin(**headers))
    assert resp.status == status, await resp.text()
    if status == 202:
        assert await resp.read() == b""


async def by_media(client: Client, media_id: str = MEDIA) -> Any:
    return await argo_body(await client.get(f"/usages/media/{media_id}"), 200)


async def by_usage(client: Client, usage_id: str) -> Any:
    return await argo_body(await client.get(f"/usages/{usage_id.replace('/', '%2F')}"), 200)


def as_seed(document: Any, client: Client) -> Any:
    """``document`` with only what the seed lets differ (host, dates, the MD5 suffix) set to the seed's."""
    text = json.dumps(document)
    text = text.replace(base(client), SEED_HOST).replace(media_api(client), SEED_MEDIA_API)
    text = re.sub(rf"{CONTENT}_[0-9a-f]{{32}}", f"{CONTENT}_87ad7407a9caef288eb1d34c16cc4735", text)
    out = json.loads(text)

    def dates(usage: dict[str, Any]) -> None:
        assert ISO_SECONDS.match(usage["dateAdded"]) and ISO_SECONDS.match(usage["lastModified"])
        assert usage["dateAdded"] <= usage["lastModified"]
        usage["dateAdded"], usage["lastModified"] = SEED_USAGE["dateAdded"], SEED_USAGE["lastModified"]

    for item in out["data"] if isinstance(out["data"], list) else [{"data": out["data"]}]:
        dates(item["data"])
    return out


# --- the seed's documents -----------------------------------------------------------------------


async def test_the_documented_usage_by_media_is_reproduced_from_events(client: Client) -> None:
    await post(client, "/usages/digital", digital(references=[FRONTEND, COMPOSER]))
    document = await by_media(client)
    assert USAGE_ID.match(document["data"][0]["data"]["id"])
    assert as_seed(document, client) == SEED_BY_MEDIA


async def test_the_documented_usage_by_id_is_reproduced_from_events(client: Client) -> None:
    await post(client, "/usages/digital", digital(references=[FRONTEND, COMPOSER]))
    first = (await by_media(client))["data"][0]["data"]
    await asyncio.sleep(1.0)  # the API's times have whole seconds
    # The content's frontend reference has gained a name: republishing replaces it.
    await post(
        client, "/usages/digital", digital(references=[{**FRONTEND, "name": "Some Headline"}, COMPOSER])
    )
    document = await by_usage(client, first["id"])
    assert document["data"]["id"] == first["id"] and document["data"]["dateAdded"] == first["dateAdded"]
    assert document["data"]["lastModified"] > first["lastModified"]
    assert document["uri"].endswith("/usages/" + first["id"].replace("/", "%2F"))
    assert as_seed(document, client) == SEED_BY_USAGE


# --- links --------------------------------------------------------------------------------------


async def follow(url: str) -> Any:
    """GET an absolute URL as any client would, outside the test client."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, (url, await resp.text())
        return await resp.json(content_type=None)


async def test_every_uri_and_href_is_absolute_and_can_be_followed(client: Client) -> None:
    odd = "odd?id#50%+&=;~x"  # every one of these needs encoding in a path
    await post(client, "/usages/digital", digital(media_ids=[MEDIA, odd]))
    await post(client, "/usages/print", {"printUsageRecords": [print_record()]})
    for media_id in (MEDIA, odd):
        document = await argo_body(await client.get(f"/usages/media/{quote(media_id, safe='')}"), 200)
        assert document["uri"].startswith(base(client) + "/usages/media/")
        assert await follow(document["uri"]) == document
        [media_link] = document["links"]
        assert media_link["rel"] == "media" and media_link["href"].startswith(media_api(client) + "/images/")
        assert await follow(media_link["href"]) == {"data": {"id": media_id}}
        for item in document["data"]:
            assert item["uri"].startswith(base(client) + "/usages/") and "%2F" in item["uri"]
            usage = await follow(item["uri"])
            assert usage["uri"] == item["uri"] and usage["data"] == item["data"]
            media_href, usages_href = (link["href"] for link in usage["links"])
            assert [link["rel"] for link in usage["links"]] == ["media", "media-usage"]
            assert media_href == media_link["href"] and await follow(usages_href) == document
    assert (await by_media(client))["length"] == 2


async def test_by_default_the_media_link_resolves_on_the_gateway(services: Services) -> None:
    settings, port = public_settings(services.settings)
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as client:
        await post(client, "/usages/digital", digital())
        document = await by_media(client)
        href = document["links"][0]["href"]
        assert href == f"http://127.0.0.1:{port}/images/{MEDIA}"
        image = await follow(href)
        assert image["uri"] == href and image["data"]["id"] == MEDIA
        assert image["data"]["usages"] == {"uri": document["uri"], "data": document["data"]}
        await error(await client.get("/images/unknown"), 404, "not-found")


# --- writes -------------------------------------------------------------------------------------


async def test_print_syndication_front_and_download_usages(client: Client) -> None:
    await post(client, "/usages/print", {"printUsageRecords": [print_record(), print_record(page=2)]})
    await post(
        client,
        "/usages/syndication",
        {
            "data": {
                "partnerName": "Reuters",
                "syndicatedBy": "ed",
                "mediaId": MEDIA,
                "dateAdded": "2018-01-02T03:04:05Z",
            }
        },
    )
    await post(
        client,
        "/usages/front",
        {"data": {"addedBy": "ed", "front": "uk", "mediaId": MEDIA, "dateAdded": "2018-01-02T03:04:05Z"}},
    )
    await post(
        client,
        "/usages/download",
        {"data": {"downloadedBy": "ed", "mediaId": MEDIA, "dateAdded": 1514862245000}},
    )
    document = await by_media(client)
    usages = {
        u["data"]["platform"] + str(u["data"].get("printUsageMetadata", {}).get("pageNumber", "")): u["data"]
        for u in document["data"]
    }
    assert (
        sorted(usages) == ["download", "front", "print1", "print2", "syndication"] and document["length"] == 5
    )
    assert usages["print1"]["printUsageMetadata"] == PRINT_METADATA
    assert usages["print1"]["references"] == [
        {"type": "indesign", "name": "2014-07-25, The Grauniad, Grauniad Weekly Test, Page 1"}
    ]
    assert (usages["print1"]["status"], usages["print1"]["dateAdded"]) == ("pending", "2014-07-25T16:00:00Z")
    assert usages["syndication"]["syndicationUsageMetadata"] == {
        "partnerName": "Reuters",
        "syndicatedBy": "ed",
    }
    assert (usages["syndication"]["status"], usages["syndication"]["dateAdded"]) == (
        "syndicated",
        "2018-01-02T03:04:05Z",
    )
    assert usages["front"]["frontUsageMetadata"] == {"addedBy": "ed", "front": "uk"}
    assert (usages["front"]["status"], usages["front"]["references"]) == (
        "unknown",
        [{"type": "front", "name": "uk"}],
    )
    assert usages["download"]["downloadUsageMetadata"] == {"downloadedBy": "ed"}
    assert (usages["download"]["status"], usages["download"]["dateAdded"]) == (
        "downloaded",
        "2018-01-02T03:04:05Z",
    )
    for usage in usages.values():
        assert usage["media"] == "image" and usage["id"].startswith(usage["platform"] + "/")
        assert ISO_SECONDS.match(usage["lastModified"])


async def test_republishing_the_same_usage_changes_nothing(client: Client) -> None:
    await post(client, "/usages/digital", digital())
    first = await by_media(client)
    await asyncio.sleep(1.0)
    await post(client, "/usages/digital", digital())
    await post(client, "/usages/digital", digital())
    assert await by_media(client) == first
    # A report that does say something new moves lastModified.
    changed = digital()
    changed["digitalUsageMetadata"] = {**changed["digitalUsageMetadata"], "webTitle": "A new title"}
    await post(client, "/usages/digital", changed)
    second = await by_media(client)
    assert second["length"] == 1
    before, after = first["data"][0]["data"], second["data"][0]["data"]
    assert after["lastModified"] > before["lastModified"] and after["dateAdded"] == before["dateAdded"]
    assert after["digitalUsageMetadata"]["webTitle"] == "A new title"


async def test_an_idempotency_key_makes_a_retry_one_write(client: Client, js: JetStreamContext) -> None:
    for _ in range(3):
        await post(
            client, "/usages/print", {"printUsageRecords": [print_record()]}, **{"Idempotency-Key": "p-1"}
        )
    info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.media.>")
    assert info.state.subjects == {"usagehub.events.media.recorded": 1}
    # The same key with another request is refused, and writes nothing.
    other = {"printUsageRecords": [print_record(page=2)]}
    resp = await client.post("/usages/print", json=other, headers=admin(**{"Idempotency-Key": "p-1"}))
    await error(resp, 422, "unprocessable-request")
    info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.media.>")
    assert info.state.subjects == {"usagehub.events.media.recorded": 1}
    resp = await client.post("/usages/print", json={}, headers=admin(**{"Idempotency-Key": "bad key"}))
    await error(resp, 400, "invalid-idempotency-key")


async def test_a_content_update_removes_the_media_it_no_longer_uses(client: Client) -> None:
    other = "a" * 40
    await post(client, "/usages/digital", digital(media_ids=[MEDIA, other], status="published"))
    await post(client, "/usages/digital", digital(media_ids=[MEDIA], status="published"))
    [gone] = (await by_media(client, other))["data"]
    assert gone["data"]["status"] == "removed" and ISO_SECONDS.match(gone["data"]["dateRemoved"])
    assert (await by_media(client))["data"][0]["data"]["status"] == "published"


async def test_the_status_rules_through_http(client: Client) -> None:
    await post(client, "/usages/digital", digital(status="pending"))
    assert [u["data"]["status"] for u in (await by_media(client))["data"]] == ["pending"]
    await post(client, "/usages/digital", digital(status="published"))
    document = await by_media(client)
    assert [u["data"]["status"] for u in document["data"]] == ["published"] and document["length"] == 1
    # The content is published without the picture: its published usage is removed, which hides the
    # pending one too; nothing is reported, as the original answers then.
    await post(client, "/usages/digital", digital(media_ids=[], status="published"))
    await error(await client.get(f"/usages/media/{MEDIA}"), 404, "not-found")
    # Nothing is lost: each usage is still there by its id.
    pending = f"composer/{CONTENT}_" + hashlib.md5(f"{MEDIA}_pending".encode()).hexdigest()
    assert (await by_usage(client, pending))["data"]["status"] == "pending"


# --- validation ---------------------------------------------------------------------------------

GOOD_DATA = {
    "/usages/syndication": {"partnerName": "Reuters", "mediaId": MEDIA, "dateAdded": "2018-01-02T03:04:05Z"},
    "/usages/front": {"addedBy": "ed", "front": "uk", "mediaId": MEDIA, "dateAdded": "2018-01-02T03:04:05Z"},
    "/usages/download": {"downloadedBy": "ed", "mediaId": MEDIA, "dateAdded": "2018-01-02T03:04:05Z"},
}
BAD_BODIES: list[tuple[str, Any, str, list[str]]] = [
    (
        "/usages/print",
        {
            "printUsageRecords": [
                print_record(),
                print_record(page=2),
                {**print_record(page=3), "printUsageMetadata": {**PRINT_METADATA, "size": {"y": 1}}},
            ]
        },
        "print-usage-request-parse-failed",
        ["printUsageRecords[2].printUsageMetadata.size.x: required"],
    ),
    (
        "/usages/print",
        {"printUsageRecords": [{**print_record(), "mediaId": 5, "usageStatus": None}, "x"]},
        "print-usage-request-parse-failed",
        [
            "printUsageRecords[0].mediaId: must be a string",
            "printUsageRecords[0].usageStatus: required",
            "printUsageRecords[1]: must be an object",
        ],
    ),
    ("/usages/print", {"records": []}, "print-usage-request-parse-failed", ["printUsageRecords: required"]),
    (
        "/usages/digital",
        {**digital(), "digitalUsageMetadata": {"webUrl": "x"}, "mediaIds": [MEDIA, "a/b"]},
        "digital-usage-parse-failed",
        [
            "digitalUsageMetadata.webTitle: required",
            "digitalUsageMetadata.webUrl: must be an absolute http(s) URL",
            "digitalUsageMetadata.sectionId: required",
            "mediaIds[1]: must be a media id",
        ],
    ),
    (
        "/usages/syndication",
        {"data": {**GOOD_DATA["/usages/syndication"], "partnerName": 1}},
        "syndication-usage-parse-failed",
        ["data.partnerName: must be a string"],
    ),
    (
        "/usages/syndication",
        GOOD_DATA["/usages/syndication"],
        "syndication-usage-parse-failed",
        ["data: required"],
    ),
    (
        "/usages/front",
        {"data": {**GOOD_DATA["/usages/front"], "dateAdded": "soon", "front": None}},
        "front-usage-parse-failed",
        ["data.front: required", "data.dateAdded: must be a date-time"],
    ),
    (
        "/usages/download",
        {"data": {**GOOD_DATA["/usages/download"], "mediaId": ""}},
        "download-usage-parse-failed",
        ["data.mediaId: must be 1 to 200 printable ASCII characters"],
    ),
]


@pytest.mark.parametrize(("path", "body", "key", "problems"), BAD_BODIES)
async def test_a_bad_body_is_400_with_every_problem_and_nothing_is_written(
    client: Client, js: JetStreamContext, path: str, body: Any, key: str, problems: list[str]
) -> None:
    message = await error(await client.post(path, json=body, headers=admin()), 400, key)
    assert len(message.split("; ")) == len(problems), message
    for problem, found in zip(problems, message.split("; "), strict=True):
        assert found.startswith(problem), message
    await error(await client.get(f"/usages/media/{MEDIA}"), 404, "not-found")
    info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.media.>")
    assert not info.state.subjects


DEEP = b'{"data": ' + b"[" * 900 + b"]" * 900 + b"}"  # msgspec decodes it; nested in a command, not
DEEPEST = b"[" * 20_000 + b"]" * 20_000


PARSE_KEYS = {
    "/usages/print": "print-usage-request-parse-failed",
    "/usages/digital": "digital-usage-parse-failed",
    "/usages/syndication": "syndication-usage-parse-failed",
    "/usages/front": "front-usage-parse-failed",
    "/usages/download": "download-usage-parse-failed",
    f"/usages/status/update/{MEDIA}/composer%2Fx_y": "update-image-usage-status-failed",
}


async def test_a_body_that_is_not_a_json_object_is_400(client: Client) -> None:
    for path, key in PARSE_KEYS.items():
        method = client.put if "status" in path else client.post
        for raw in (b"", b"not json", b"[1]", b'"text"', b'{"a": \xff}', DEEP, DEEPEST):
            headers = admin(**{"Content-Type": "application/json"})
            message = await error(await method(path, data=raw, headers=headers), 400, key)
            assert "JSON" in message or "nested" in message, (path, raw[:20], message)


async def test_print_bodies_beyond_the_configured_size_are_413(services: Services) -> None:
    settings, port = public_settings(services.settings, media_print_max_kb=2)
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as client:
        records = [print_record(page=i) for i in range(8)]
        body = json.dumps({"printUsageRecords": records}).encode()
        assert len(body) > 2048
        await error(
            await client.post("/usages/print", data=body, headers=admin()), 413, "request-entity-too-large"
        )

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        resp = await client.post("/usages/print", data=chunked(), headers=admin())
        await error(resp, 413, "request-entity-too-large")
        await error(await client.get(f"/usages/media/{MEDIA}"), 404, "not-found")
        small = json.dumps({"printUsageRecords": records[:2]}).encode()
        assert len(small) <= 2048
        await post(client, "/usages/print", json.loads(small))


async def test_the_largest_print_body_allowed_fits_one_event(services: Services) -> None:
    settings, port = public_settings(services.settings, media_print_max_kb=MAX_PRINT_KB)
    limit = MAX_PRINT_KB * 1024
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as client:

        def fill(record: Any) -> bytes:
            """As many records as fit the limit, in compact JSON."""
            records: list[Any] = []
            size = len(compact({"printUsageRecords": []}))
            while size + len(compact(next_one := record(len(records)))) + 1 <= limit:
                records.append(next_one)
                size += len(compact(next_one)) + (1 if len(records) > 1 else 0)
            body = compact({"printUsageRecords": records})
            assert limit - 1000 <= len(body) <= limit
            return body

        # Real records: an event of about 1.5 times the body, which fits one message.
        body = fill(lambda i: print_record(media_id=f"{i:040x}", page=i % 40))
        resp = await client.post("/usages/print", data=body, headers=admin())
        assert resp.status == 202, await resp.text()
        assert (await by_media(client, f"{len(json.loads(body)['printUsageRecords']) - 1:040x}"))[
            "length"
        ] == 1

        # Records of nothing but short fields make an event twice their size: too large, refused
        # whole (413), and nothing of them is written.
        def tiny(i: int) -> dict[str, Any]:
            texts = (
                "sectionName",
                "storyName",
                "publicationName",
                "orderedBy",
                "publicationCode",
                "sectionCode",
            )
            numbers = ("issueDate", "layoutId", "edition", "pageNumber")
            meta = {
                **PRINT_METADATA,
                **dict.fromkeys(texts, ""),
                **dict.fromkeys(numbers, 0),
                "size": {"x": 0, "y": 0},
            }
            return {
                "dateAdded": 0,
                "mediaId": f"t{i}",
                "printUsageMetadata": meta,
                "containerId": "",
                "usageId": "",
                "usageStatus": "pending",
            }

        message = await error(
            await client.post("/usages/print", data=fill(tiny), headers=admin()),
            413,
            "request-entity-too-large",
        )
        assert "smaller requests" in message
        await error(await client.get("/usages/media/t0"), 404, "not-found")


# --- credentials --------------------------------------------------------------------------------

WRITES = [
    ("POST", "/usages/digital"),
    ("POST", "/usages/print"),
    ("POST", "/usages/syndication"),
    ("POST", "/usages/front"),
    ("POST", "/usages/download"),
    ("PUT", f"/usages/status/update/{MEDIA}/composer%2Fx_y"),
    ("DELETE", f"/usages/media/{MEDIA}"),
    ("DELETE", f"/usages/media/{MEDIA}/composer%2Fx_y"),
]


async def test_writes_need_the_secret_key_and_reads_do_not(services: Services) -> None:
    # More failures than the door lets one address have by default (its 429 is tested elsewhere).
    settings, port = public_settings(services.settings, auth_failure_burst=1000)
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as client:
        await post(client, "/usages/digital", digital())
        wrong = (
            {},
            {"Authorization": "wrong"},
            {"Authorization": SECRET + "x"},
            {"Authorization": SECRET[:-1]},
        )
        for headers in wrong:
            for method, path in WRITES:
                resp = await client.request(method, path, json={"data": "published"}, headers=headers)
                await error(resp, 401, "authentication-failure")
        assert (await by_media(client))["length"] == 1


async def test_without_a_secret_key_the_write_routes_do_not_exist(services: Services) -> None:
    settings, port = public_settings(services.settings, secret_key="")
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1", port=port)) as client:
        for method, path in WRITES:
            await error(await client.request(method, path, json={}, headers=admin()), 404, "not-found")


# --- reads, deletes and status ------------------------------------------------------------------


async def test_unknown_media_and_usages_are_404_in_the_original_shape(client: Client) -> None:
    await post(client, "/usages/digital", digital())
    for path in (
        "/usages/media/unknown",
        "/usages/media/%00",
        "/usages/a%00b",
        "/usages/" + "x" * 401,
        f"/usages/composer%2F{CONTENT}_00000000000000000000000000000000",
        "/usages/nothing",
        "/usages/print",
    ):
        assert await error(await client.get(path), 404, "not-found") == "No usages found."


async def test_wrong_methods_are_405_with_allow(client: Client) -> None:
    for method, path in (
        ("PUT", f"/usages/media/{MEDIA}"),
        ("GET", f"/usages/media/{MEDIA}/composer%2Fx_y"),
        ("PATCH", "/usages/print"),
        ("POST", "/usages/x"),
    ):
        resp = await client.request(method, path, headers=admin())
        assert resp.status == 405 and "Allow" in resp.headers


async def test_delete_a_media_then_republish_as_the_original(client: Client) -> None:
    await post(client, "/usages/digital", digital())
    await post(client, "/usages/print", {"printUsageRecords": [print_record()]})
    [first] = [u["data"] for u in (await by_media(client))["data"] if u["data"]["platform"] == "digital"]
    resp = await client.delete(f"/usages/media/{MEDIA}", headers=admin())
    assert resp.status == 200 and await resp.read() == b""
    await error(await client.get(f"/usages/media/{MEDIA}"), 404, "not-found")
    await error(await client.get("/usages/" + first["id"].replace("/", "%2F")), 404, "not-found")
    # Deleting again, or a media that never had usages, is still 200 (the original's answer).
    for media_id in (MEDIA, "never-used"):
        assert (await client.delete(f"/usages/media/{media_id}", headers=admin())).status == 200
    await asyncio.sleep(1.0)
    await post(client, "/usages/digital", digital())
    [again] = (await by_media(client))["data"]
    # Deleted means gone: the same usage comes back with the same id as a new one.
    assert again["data"]["id"] == first["id"] and again["data"]["dateAdded"] > first["dateAdded"]


async def test_delete_one_usage(client: Client) -> None:
    await post(client, "/usages/digital", digital(media_ids=[MEDIA, "other"]))
    await post(client, "/usages/print", {"printUsageRecords": [print_record()]})
    digital_id = next(
        u["data"]["id"] for u in (await by_media(client))["data"] if u["data"]["platform"] == "digital"
    )
    # Another media's usage is not this media's: 404.
    await error(await client.delete(f"/usages/media/other/{digital_id}", headers=admin()), 404, "not-found")
    resp = await client.delete(
        f"/usages/media/{MEDIA}/{digital_id}", headers=admin()
    )  # unencoded, as the original
    assert resp.status == 200 and await resp.read() == b""
    assert [u["data"]["platform"] for u in (await by_media(client))["data"]] == ["print"]
    encoded = digital_id.replace("/", "%2F")
    await error(await client.delete(f"/usages/media/{MEDIA}/{encoded}", headers=admin()), 404, "not-found")
    assert (await by_media(client, "other"))["length"] == 1


async def test_update_a_usages_status(client: Client) -> None:
    await post(client, "/usages/print", {"printUsageRecords": [print_record()]})
    [usage] = (await by_media(client))["data"]
    usage_id = usage["data"]["id"]
    path = f"/usages/status/update/{MEDIA}/{usage_id.replace('/', '%2F')}"
    resp = await client.put(path, json={"data": "published"}, headers=admin())
    assert resp.status == 200 and await resp.read() == b""
    updated = (await by_usage(client, usage_id))["data"]
    assert (updated["id"], updated["status"], updated["dateAdded"]) == (
        usage_id,
        "published",
        usage["data"]["dateAdded"],
    )
    resp = await client.put(path, json={"data": "Removed"}, headers=admin())
    assert resp.status == 200
    removed = (await by_usage(client, usage_id))["data"]
    assert removed["status"] == "removed" and ISO_SECONDS.match(removed["dateRemoved"])
    message = await error(
        await client.put(path, json={"data": "gone"}, headers=admin()),
        400,
        "update-image-usage-status-failed",
    )
    assert message.startswith("data: must be one of pending, published, removed")
    await error(
        await client.put(path, json={"status": "published"}, headers=admin()),
        400,
        "update-image-usage-status-failed",
    )
    unknown = f"/usages/status/update/{MEDIA}/print%2Fnothing_here"
    await error(await client.put(unknown, json={"data": "published"}, headers=admin()), 404, "not-found")
    wrong_media = f"/usages/status/update/other/{usage_id}"
    await error(await client.put(wrong_media, json={"data": "published"}, headers=admin()), 404, "not-found")
