"""Configuration: defaults, then the YAML file, then ``PUBLISHER_*`` variables."""

from __future__ import annotations

from pathlib import Path

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


def test_environment_overrides_reach_keys_no_default_names(tmp_path):
    environ = {
        "PUBLISHER_PLUGINS__SITEMAP__MAX_URLS": "0",
        "PUBLISHER_QUARANTINE_DAYS": "3",
        "PUBLISHER_OUTPUTS__FEEDS__TIMEOUT": "2.5",
        "PUBLISHER_SOURCES__CMS__SECURED__REQUIRED": "true",
        "PUBLISHER_DATA_DIR": str(tmp_path),
    }
    settings = load_settings(environ=environ)
    assert settings["plugins"]["sitemap"] == {"max_urls": 0}  # its JSON value, parsed
    assert settings["quarantine_days"] == 3.0
    assert settings["outputs"]["feeds"] == {"timeout": 2.5}
    assert settings["sources"]["cms"] == {"secured": {"required": True}}


def test_text_settings_keep_what_the_environment_wrote():
    settings = load_settings(environ={"PUBLISHER_SITE_TITLE": "007", "PUBLISHER_STRICT": "yes"})
    assert settings["site_title"] == "007"
    assert settings["strict"] is True


def test_values_come_out_typed(tmp_path):
    config = tmp_path / "publisher.yaml"
    config.write_text("delivery:\n  timeout: '7'\n  batch_size: 50.0\nworker:\n  threads: '2'\n")
    settings = load_settings(environ={"PUBLISHER_CONFIG": str(config)})
    assert settings["delivery"]["timeout"] == 7.0 and isinstance(
        settings["delivery"]["timeout"], float
    )
    assert settings["delivery"]["batch_size"] == 50 and isinstance(
        settings["delivery"]["batch_size"], int
    )
    assert settings["worker"]["threads"] == 2


def problems_of(**kwargs) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    return caught.value.errors


def test_unknown_keys_wrong_types_and_bad_values_name_their_path_and_origin(tmp_path):
    config = tmp_path / "publisher.yaml"
    config.write_text(
        "delivery:\n  timeout: soon\n  retry_schedule: [0, -5]\n"
        "limits:\n  max_batch: true\n"
        "site_titel: typo\n"
        "logging:\n  level: LOUD\n"
    )
    errors = problems_of(
        environ={
            "PUBLISHER_CONFIG": str(config),
            "PUBLISHER_DELIVERY__TIMOUT": "3",
            "PUBLISHER_WORKER__THREADS": "0",
        }
    )
    where = f"(from {config})"
    assert errors == {
        f"delivery.timeout {where}": ["Not a valid number."],
        f"delivery.retry_schedule[1] {where}": ["Must be greater than or equal to 0."],
        "delivery.timout (from PUBLISHER_DELIVERY__TIMOUT)": ["Unknown field."],
        f"limits.max_batch {where}": ["Not a valid integer."],
        f"site_titel {where}": ["Unknown field."],
        f"logging.level {where}": ["must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"],
        "worker.threads (from PUBLISHER_WORKER__THREADS)": ["Must be greater than or equal to 1."],
    }


def test_unrelated_publisher_variables_are_not_settings():
    settings = load_settings(environ={"PUBLISHER_BIND": "0.0.0.0:80", "PUBLISHER_THREADS": "8"})
    assert "bind" not in settings and "threads" not in settings


def test_a_bad_secured_policy_and_a_bad_routing_rule_are_found_at_load():
    errors = problems_of(
        environ={},
        overrides={
            "secured": {"on_failure": "explode"},
            "sources": {"cms": {"secrets": ["not-whsec"], "secured": {"on_sealed": "maybe"}}},
            "outputs": {"feeds": {"when": "__import__('os')"}, "files": {"when": "quality >="}},
        },
    )
    assert errors["secured.on_failure (from overrides)"] == [
        "must be one of reject, quarantine, sealed"
    ]
    assert errors["sources.cms.secured.on_sealed (from overrides)"] == [
        "must be one of accept, quarantine, reject"
    ]
    assert errors["sources.cms.secrets[0] (from overrides)"] == ["must be whsec_..."]
    assert "Call is not allowed" in errors["outputs.feeds.when (from overrides)"][0]
    assert "is not valid" in errors["outputs.files.when (from overrides)"][0]


def test_every_default_has_a_place_in_the_schema():
    from publisher.settings_schema import field_at

    def leaves(value, path=()):
        if isinstance(value, dict) and value:
            for key, item in value.items():
                yield from leaves(item, (*path, key))
        else:
            yield path

    for path in leaves(DEFAULTS):
        assert field_at(path) is not None, ".".join(path)
    load_settings(environ={})  # the defaults themselves pass


def test_effective_masks_secrets_and_says_where_each_value_came_from(tmp_path):
    from publisher.config import effective

    config = tmp_path / "publisher.yaml"
    config.write_text(
        "sources:\n  cms:\n    secrets: [whsec_c2VjcmV0c2VjcmV0c2VjcmV0]\n"
        "plugins:\n  webhook:\n    subscribers:\n"
        "      - {name: a, url: 'https://example.org/', secret: whsec_c2VjcmV0c2VjcmV0}\n"
    )
    settings = load_settings(
        environ={
            "PUBLISHER_CONFIG": str(config),
            "PUBLISHER_DATABASE_URL": "postgresql://app:hunter2@db.internal/publisher",
            "PUBLISHER_QUEUE_URL": "redis://:sesame@cache:6379/0",
            "PUBLISHER_PLUGINS__SITEMAP__API_TOKEN": "tok-123",
        }
    )
    rows = {key: (value, origin) for key, value, origin in effective(settings)}
    assert rows["sources.cms.secrets"] == (["********"], str(config))
    assert rows["plugins.webhook.subscribers[0].secret"] == ("********", str(config))
    assert rows["plugins.webhook.subscribers[0].url"] == ("https://example.org/", str(config))
    assert rows["database_url"] == (
        "postgresql://app:********@db.internal/publisher",
        "PUBLISHER_DATABASE_URL",
    )
    assert rows["queue_url"] == ("redis://:********@cache:6379/0", "PUBLISHER_QUEUE_URL")
    assert rows["plugins.sitemap.api_token"] == (
        "********",
        "PUBLISHER_PLUGINS__SITEMAP__API_TOKEN",
    )
    assert rows["token_cache_seconds"] == (1.0, "default")  # a number named token: not secret
    assert rows["delivery.timeout"] == (30.0, "default")
    text = repr(rows)
    for secret in ("hunter2", "sesame", "tok-123", "c2VjcmV0"):
        assert secret not in text


def test_the_deploy_example_passes_the_schema_once_its_placeholders_are_filled(tmp_path):
    from publisher.plugins import make_plugin_manager
    from publisher.settings_schema import check_plugin_settings

    example = (Path(__file__).parent.parent / "deploy" / "publisher.yaml").read_text()
    config = tmp_path / "publisher.yaml"
    config.write_text(example.replace("whsec_REPLACE_ME", "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"))
    settings = load_settings(environ={"PUBLISHER_CONFIG": str(config)})
    check_plugin_settings(make_plugin_manager(settings), settings)
    assert settings["plugins"]["webhook"]["subscribers"][0]["name"] == "partner"
