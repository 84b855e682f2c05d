"""How media-usage links spell ids: one path segment each, percent-encoded as the original does."""

from __future__ import annotations

from urllib.parse import quote, unquote

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.media_read import media_uri, media_usages_uri, path_segment, usage_uri

PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


@given(PRINTABLE | st.text(max_size=20))
def test_a_segment_is_what_quote_makes_of_it(value: str) -> None:
    assert path_segment(value) == quote(value, safe="")
    assert "/" not in path_segment(value) and unquote(path_segment(value)) == value


def test_the_seeds_links() -> None:
    usage_id = "composer/56587d29e4b0fe4d55bb97d5_87ad7407a9caef288eb1d34c16cc4735"
    media_id = "53b2098571e4e9f1d22e98b74db9a8bc5d060331"
    host = "https://media-usage.tools.example.com"
    assert (
        usage_uri(host, usage_id)
        == f"{host}/usages/composer%2F56587d29e4b0fe4d55bb97d5_87ad7407a9caef288eb1d34c16cc4735"
    )
    assert media_usages_uri(host, media_id) == f"{host}/usages/media/{media_id}"
    assert (
        media_uri("https://api.media.tools.example.com", media_id)
        == f"https://api.media.tools.example.com/images/{media_id}"
    )
