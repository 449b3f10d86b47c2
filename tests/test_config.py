"""Configuration: defaults, then the YAML file, then ``PUBLISHER_*`` variables."""

from __future__ import annotations

import pytest

from publisher.config import DEFAULTS, load_settings
from publisher.errors import ConfigError


def test_defaults_derive_the_embedded_paths(tmp_path):
    settings = load_settings(environ={"PUBLISHER_DATA_DIR": str(tmp_path)})
    assert settings["database_url"] == f"sqlite:///{tmp_path}/publisher.db"
    assert settings["queue_url"] == f"{tmp_path}/queue.db"
    assert settings["delivery"]["retry_schedule"] == DEFAULTS["delivery"]["retry_schedule"]


def test_file_then_environment_win_in_that_order(tmp_path):
    config = tmp_path / "publisher.yaml"
    config.write_text("site_title: From the file\ndelivery:\n  timeout: 7\nstrict: true\n")
    environ = {
        "PUBLISHER_CONFIG": str(config),
        "PUBLISHER_STRICT": "false",
        "PUBLISHER_DELIVERY__TIMEOUT": "12.5",
        "PUBLISHER_QUEUE_URL": "redis://127.0.0.1:6379/0",
        "PUBLISHER_UNKNOWN_THING": "ignored",
    }
    settings = load_settings(environ=environ)
    assert settings["site_title"] == "From the file"
    assert settings["strict"] is False
    assert settings["delivery"]["timeout"] == 12.5
    assert settings["delivery"]["lease_seconds"] == DEFAULTS["delivery"]["lease_seconds"]
    assert settings["queue_url"] == "redis://127.0.0.1:6379/0"
    assert "unknown_thing" not in settings


def test_a_broken_file_is_a_clear_error(tmp_path):
    config = tmp_path / "publisher.yaml"
    config.write_text("delivery: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(environ={"PUBLISHER_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(environ={"PUBLISHER_CONFIG": str(tmp_path / "missing.yaml")})


def test_the_file_is_read_with_the_safe_loader(tmp_path):
    config = tmp_path / "publisher.yaml"
    config.write_text("site_title: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_settings(environ={"PUBLISHER_CONFIG": str(config)})
