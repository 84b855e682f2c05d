"""Shared fixtures for the deployment-artefact tests (all offline: no Docker engine, no cluster)."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .checks import REPO_ROOT, Rendered, find_tool, render_kustomization


def _project_module(name: str) -> ModuleType:
    """A module of the project, importable from an installed project or from the work tree."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        sys.path.insert(0, str(REPO_ROOT))
        return importlib.import_module(name)


def _settings_module() -> ModuleType:
    return _project_module("shared.settings")


@pytest.fixture(scope="session")
def env_vars() -> frozenset[str]:
    names: tuple[str, ...] = _settings_module().ENV_VARS
    return frozenset(names)


@pytest.fixture(scope="session")
def settings_module() -> ModuleType:
    return _settings_module()


@pytest.fixture(scope="session")
def bus_permissions() -> ModuleType:
    """``shared.bus_permissions``: the NATS users and the authorization.conf they are rendered into."""
    return _project_module("shared.bus_permissions")


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """``kubectl kustomize`` output of the base and both overlays, rendered once per session."""
    k8s = REPO_ROOT / "deploy" / "k8s"
    return {
        name: render_kustomization(k8s / path)
        for name, path in {"base": "base", "dev": "overlays/dev", "prod": "overlays/prod"}.items()
    }


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A writable copy of deploy/k8s for the broken-copy tests."""
    target = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "deploy" / "k8s", target)
    return target


@pytest.fixture(scope="session")
def nats_server() -> str:
    return find_tool("nats-server")
