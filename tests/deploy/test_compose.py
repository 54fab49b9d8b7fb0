"""docker-compose.yml cannot run here (no Docker engine): check what can be checked statically."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _console_scripts() -> set[str]:
    scripts: set[str] = set()
    for pyproject in (ROOT / "services").glob("*/pyproject.toml"):
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return scripts


def test_every_service_has_an_image_or_a_build_and_known_dependencies() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_build_points_at_the_project_dockerfile() -> None:
    builds = [s["build"] for s in _compose()["services"].values() if "build" in s]
    assert builds
    for build in builds:
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_npsloop_commands_are_console_scripts_the_image_installs() -> None:
    scripts = _console_scripts()
    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command and str(command[0]).startswith("npsloop-"):
            assert command[0] in scripts, f"{name} runs {command[0]}, not a declared console script"


def test_kafka_is_apache_kafka_4_1_in_kraft_mode() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.1")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_application_settings_use_the_npsloop_prefix() -> None:
    environment = _compose()["x-npsloop-env"]
    assert environment
    assert all(key.startswith("NPSLOOP_") for key in environment)
