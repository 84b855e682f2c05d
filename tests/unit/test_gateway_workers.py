"""How many gateway workers ``usagehub up`` starts, and which counts the configuration accepts."""

from __future__ import annotations

import pytest

from services.local.supervisor import gateway_workers
from shared.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("configured", "cores", "started"),
    [(0, 1, 1), (0, 2, 2), (0, 16, 2), (0, None, 1), (1, 16, 1), (3, 2, 3), (64, 1, 64)],
)
def test_zero_means_one_per_core_up_to_two_and_a_count_is_taken_as_given(
    configured: int, cores: int | None, started: int
) -> None:
    assert gateway_workers(configured, cores) == started


def test_zero_is_one_where_the_kernel_would_not_spread_connections() -> None:
    assert gateway_workers(0, 8, linux=False) == 1
    assert gateway_workers(3, 8, linux=False) == 3  # asked for: as given


def test_the_default_is_one_per_core_and_a_count_is_read() -> None:
    assert load_settings({}).http_workers == 0
    assert load_settings({"USAGEHUB_HTTP_WORKERS": "4"}).http_workers == 4


@pytest.mark.parametrize("raw", ["-1", "65", "1000"])
def test_a_count_out_of_range_is_refused_with_the_range(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"USAGEHUB_HTTP_WORKERS must be from 1 to 64, or 0"):
        load_settings({"USAGEHUB_HTTP_WORKERS": raw})


def test_a_count_that_is_not_a_number_is_refused_with_the_others() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"USAGEHUB_HTTP_WORKERS": "two", "USAGEHUB_HTTP_PORT": "x"})
    assert "USAGEHUB_HTTP_WORKERS='two' is not a valid int" in str(err.value)
    assert "USAGEHUB_HTTP_PORT" in str(err.value)
