"""docs/operations.md and deploy/prometheus/alerts.yml tell the truth about the settings and metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import yaml

from .checks import METRICS, REPO_ROOT, alert_rule_problems, code_metrics, docs_problems

DOCS = REPO_ROOT / "docs" / "operations.md"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def defaults(settings_module: ModuleType) -> dict[str, object]:
    settings = settings_module.Settings()
    return {f"USAGEHUB_{f.name.upper()}": getattr(settings, f.name) for f in dataclasses.fields(settings)}


def test_the_metrics_operators_rely_on_exist_in_the_code() -> None:
    assert code_metrics() >= METRICS


def test_every_setting_and_metric_is_documented(settings_module: ModuleType) -> None:
    assert set(defaults(settings_module)) == set(settings_module.ENV_VARS)
    problems = docs_problems(DOCS.read_text(), defaults(settings_module), ALERTS.read_text(), code_metrics())
    assert problems == []


def test_docs_check_reports_a_broken_copy(tmp_path: Path, settings_module: ModuleType) -> None:
    text = DOCS.read_text()
    for old, new in (
        ("| `USAGEHUB_HTTP_PORT` | `8080` |", "| `USAGEHUB_HTTP_PORT` | `80` |"),
        ("| `USAGEHUB_STATS_INTERVAL` |", "| `USAGEHUB_STATS_INTERVALS` |"),
        ("`usagehub_websocket_clients`", "`usagehub_websockets`"),
        ("        for: 5m\n", "        for: 1m\n"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    copy = tmp_path / "operations.md"
    copy.write_text(text)

    problems = "\n".join(
        docs_problems(copy.read_text(), defaults(settings_module), ALERTS.read_text(), code_metrics())
    )

    assert "USAGEHUB_HTTP_PORT: documented default '80', actual '8080'" in problems
    assert "USAGEHUB_STATS_INTERVAL is not documented" in problems
    assert "USAGEHUB_STATS_INTERVALS is documented but is not a setting" in problems
    assert "metric usagehub_websocket_clients is not documented" in problems
    assert "sample alert UsagehubProjectionLagging differs" in problems


def test_alert_rules_are_valid_promql_on_known_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    assert alert_rule_problems(rules, code_metrics()) == []
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert "usagehub_projection_lag" in exprs


def test_alert_check_reports_a_broken_copy(tmp_path: Path) -> None:
    text = ALERTS.read_text()
    for old, new in (
        (
            "max by (projection) (usagehub_projection_lag) > 1000",
            "max by (projection) (usagehub_projection_lag > 1000",
        ),
        ("usagehub_projection_lag) > 8000", "usagehub_projection_lags) > 8000"),
        ("severity: warning", "severity: page-me"),
        ("for: 15m", "for: fifteen minutes"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    copy = tmp_path / "alerts.yml"
    copy.write_text(text)

    problems = "\n".join(alert_rule_problems(yaml.safe_load(copy.read_text()), code_metrics()))

    assert "UsagehubProjectionLagging: invalid PromQL" in problems
    assert "UsagehubProjectionLagCritical: unknown metric usagehub_projection_lags" in problems
    assert "labels.severity must be" in problems
    assert "UsagehubConsumerRedeliveries: 'for' must be a Prometheus duration" in problems
