"""The media-usage settings: link bases derived from the gateway's address unless set, validated
with every other setting at start-up."""

from __future__ import annotations

import pytest

from shared.settings import MAX_PRINT_KB, SettingsError, load_settings


def test_links_default_to_the_gateways_own_address() -> None:
    settings = load_settings({})
    assert (settings.public_base_url, settings.media_api_base_url) == ("http://127.0.0.1:8080",) * 2
    everywhere = load_settings({"USAGEHUB_HTTP_HOST": "0.0.0.0", "USAGEHUB_HTTP_PORT": "9000"})
    assert everywhere.public_base_url == "http://localhost:9000"
    assert load_settings({"USAGEHUB_HTTP_HOST": "::1"}).public_base_url == "http://[::1]:8080"


def test_links_as_configured_without_a_trailing_slash() -> None:
    settings = load_settings(
        {
            "USAGEHUB_PUBLIC_URL": "https://media-usage.tools.example.com/",
            "USAGEHUB_MEDIA_API_URL": "https://api.media.tools.example.com/v1",
        }
    )
    assert settings.public_base_url == "https://media-usage.tools.example.com"
    assert settings.media_api_base_url == "https://api.media.tools.example.com/v1"
    assert load_settings({"USAGEHUB_PUBLIC_URL": "http://a:1"}).media_api_base_url == "http://a:1"


@pytest.mark.parametrize(
    "url",
    [
        "media-usage.example.com",
        "ftp://x/",
        "https://",
        "https://x/?a=1",
        "https://x/#f",
        "https://x:99999",
        "http://a b/",
    ],
)
def test_link_bases_must_be_absolute_http_urls(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {"USAGEHUB_PUBLIC_URL": url, "USAGEHUB_MEDIA_API_URL": url, "USAGEHUB_MEDIA_PRINT_MAX_KB": "0"}
        )
    message = str(caught.value)
    assert "USAGEHUB_PUBLIC_URL must be" in message and "USAGEHUB_MEDIA_API_URL must be" in message
    assert f"USAGEHUB_MEDIA_PRINT_MAX_KB must be from 1 to {MAX_PRINT_KB}" in message


def test_the_print_limit() -> None:
    assert load_settings({}).media_print_max_kb == 500
    assert (
        load_settings({"USAGEHUB_MEDIA_PRINT_MAX_KB": str(MAX_PRINT_KB)}).media_print_max_kb == MAX_PRINT_KB
    )
    with pytest.raises(SettingsError):
        load_settings({"USAGEHUB_MEDIA_PRINT_MAX_KB": str(MAX_PRINT_KB + 1)})
