"""The settings schema: every setting's type and range, checked once at start-up.

``load_settings`` merges defaults, the file and the environment, then loads the result
through :class:`SettingsSchema`: unknown keys, wrong types and bad values become one
:class:`~publisher.errors.ConfigError` whose ``errors`` map each key path
(``delivery.timeout``, ``plugins.webhook.subscribers[0].url``) to its problems, and the
values come out typed, so that no call site has to cast. A plugin's own section
(``plugins.<name>``) is checked by the schema the plugin declares through the
``register_config_schema`` hook (:func:`check_plugin_settings`), once the plugins are loaded.

Routing rules (``outputs.<name>.when``) and ``secured`` policies are compiled and checked
here too, so a bad one stops the start instead of failing records one by one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pluggy
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates

from publisher.errors import ConfigError

#: Where a value came from, by key path: ``default``, the file's path, or the env var name.
Origins = dict[tuple[str, ...], str]

log = logging.getLogger("publisher.config")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


class Number(fields.Float):
    """A finite number, never a boolean (YAML's ``yes`` is not ``1``)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        number = super()._deserialize(value, attr, data, **kwargs)
        if not math.isfinite(number):
            raise self.make_error("invalid", input=value)
        return number


class Count(fields.Integer):
    """A whole number, never a boolean; ``5.0`` from JSON or YAML is accepted as ``5``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class Text(fields.String):
    """A string; a number given in YAML (``site_title: 2026``) is taken as its text."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


def _at_least(low: float) -> validate.Range:
    return validate.Range(min=low)


def _positive() -> validate.Range:
    return validate.Range(min=0, min_inclusive=False)


def _one_of(choices: tuple[str, ...]) -> validate.OneOf:
    return validate.OneOf(choices, error="must be one of " + ", ".join(choices))


class Strict(Schema):
    """Unknown keys are errors: a misspelt setting must not be silently ignored."""

    class Meta:
        unknown = RAISE


class LimitsSchema(Strict):
    max_body_bytes = Count(required=True, validate=_at_least(1))
    max_batch = Count(required=True, validate=_at_least(1))
    max_depth = Count(required=True, validate=_at_least(1))
    max_string = Count(required=True, validate=_at_least(1))
    max_yaml_aliases = Count(required=True, validate=_at_least(0))


class SecuredPolicySchema(Strict):
    """A ``secured`` policy (docs/secured.md); a source's own one may set only some keys."""

    required = fields.Boolean()
    on_failure = Text(validate=_one_of(("reject", "quarantine", "sealed")))
    on_sealed = Text(validate=_one_of(("accept", "quarantine", "reject")))
    legacy = Text(validate=_one_of(("accept", "refuse")))


class SecuredAlarmSchema(Strict):
    """A burst of invalid envelopes from one source (docs/secured.md, "Alarm")."""

    invalid = Count(required=True, validate=_at_least(1))
    seconds = Number(required=True, validate=_at_least(1))


class ReadinessSchema(Strict):
    """What ``/readyz`` calls a full disk (docs/operations.md)."""

    min_free_bytes = Count(required=True, validate=_at_least(0))


class SourceSchema(Strict):
    secrets = fields.List(Text(validate=validate.Regexp(r"^whsec_", error="must be whsec_...")))
    secured = fields.Nested(SecuredPolicySchema)


class RoutingRule(Text):
    """An ``outputs.<name>.when`` rule, compiled now so that a bad one stops the start."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        from publisher.routing import compile_rule

        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            compile_rule(text)
        except ConfigError as exc:
            raise ValidationError(exc.message) from None
        return text


class OutputOptionsSchema(Strict):
    enabled = fields.Boolean()
    when = RoutingRule(allow_none=True)
    retry_schedule = fields.List(
        Number(validate=_at_least(0)), allow_none=True, validate=validate.Length(min=1)
    )
    timeout = Number(allow_none=True, validate=_positive())


class DeliverySchema(Strict):
    retry_schedule = fields.List(
        Number(validate=_at_least(0)), required=True, validate=validate.Length(min=1)
    )
    jitter = Number(required=True, validate=validate.Range(min=0, max=1))
    timeout = Number(required=True, validate=_positive())
    lease_seconds = Number(required=True, validate=_at_least(0))
    max_receives = Count(required=True, validate=_at_least(1))
    sweep_interval = Number(required=True, validate=_positive())
    batch_size = Count(required=True, validate=_at_least(1))
    parallel_calls = Count(required=True, validate=_at_least(1))
    lane_threads = Count(required=True, validate=_at_least(0))
    lane_backlog = Count(required=True, validate=_at_least(1))
    drift_check_interval = Number(required=True, validate=_at_least(0))
    pause_after_seconds = Number(required=True, validate=_at_least(0))


class WorkerSchema(Strict):
    threads = Count(required=True, validate=_at_least(1))


class WebhooksSchema(Strict):
    tolerance_seconds = Number(required=True, validate=_positive())
    remember_ids_days = Number(required=True, validate=_at_least(0))
    secrets_cache_seconds = Number(required=True, validate=_at_least(0))
    group_commit_max = Count(required=True, validate=_at_least(1))


class RateLimitsSchema(Strict):
    per_token_per_minute = Count(required=True, validate=_at_least(0))
    per_source_per_minute = Count(required=True, validate=_at_least(0))


class LoggingSchema(Strict):
    level = Text(required=True, validate=_one_of(LOG_LEVELS))
    format = Text(required=True, validate=_one_of(("auto", "json", "text")))
    access_level = Text(required=True, validate=_one_of(LOG_LEVELS))
    task_level = Text(required=True, validate=_one_of(LOG_LEVELS))


class SubscribersSchema(Strict):
    refresh_seconds = Number(required=True, validate=_at_least(0))
    rotation_grace_seconds = Number(required=True, validate=validate.Range(min=0, max=366 * 86400))


class RetentionSchema(Strict):
    revisions_days = Number(required=True, validate=_at_least(0))
    payloads_days = Number(required=True, validate=_at_least(0))


class MetricsSchema(Strict):
    state_refresh_seconds = Number(required=True, validate=_at_least(0))


class PluginsSchema(Schema):
    """``disabled`` plus one section per plugin, kept as given: each plugin checks its own."""

    class Meta:
        unknown = INCLUDE

    disabled = fields.List(Text(), required=True)
    #: ``{name: importable module}``, registered as an entry point would be
    load = fields.Dict(keys=Text(), values=Text())
    #: ``false`` skips plugins installed as packages (as PUBLISHER_DISABLE_PLUGIN_AUTOLOAD)
    autoload = fields.Boolean()


#: keys of ``plugins`` that are the core's, not a plugin's section
CORE_PLUGIN_KEYS = frozenset({"disabled", "load", "autoload"})


class SettingsSchema(Strict):
    """Every setting of :data:`publisher.config.DEFAULTS`, and the sections by name."""

    data_dir = Text(required=True, validate=validate.Length(min=1))
    database_url = Text(allow_none=True)
    queue_url = Text(allow_none=True)
    keys_dir = Text(required=True, validate=validate.Length(min=1))
    plugins_dir = Text(allow_none=True)
    site_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    site_title = Text(required=True)
    strict = fields.Boolean(required=True)
    volatile_fields = fields.List(Text(), required=True)
    sqlite_synchronous = Text(required=True, validate=_one_of(SYNCHRONOUS))
    limits = fields.Nested(LimitsSchema, required=True)
    secured = fields.Nested(SecuredPolicySchema, required=True)
    secured_alarm = fields.Nested(SecuredAlarmSchema, required=True)
    readiness = fields.Nested(ReadinessSchema, required=True)
    sources = fields.Dict(keys=Text(), values=fields.Nested(SourceSchema), required=True)
    plugins = fields.Nested(PluginsSchema, required=True)
    outputs = fields.Dict(keys=Text(), values=fields.Nested(OutputOptionsSchema), required=True)
    delivery = fields.Nested(DeliverySchema, required=True)
    worker = fields.Nested(WorkerSchema, required=True)
    embedded_worker = fields.Boolean(required=True)
    enqueue = Text(required=True, validate=_one_of(("inline", "background")))
    webhooks = fields.Nested(WebhooksSchema, required=True)
    rate_limits = fields.Nested(RateLimitsSchema, required=True)
    subscribers = fields.Nested(SubscribersSchema, required=True)
    token_cache_seconds = Number(required=True, validate=_at_least(0))
    quarantine_days = Number(required=True, validate=_at_least(0))
    retention = fields.Nested(RetentionSchema, required=True)
    logging = fields.Nested(LoggingSchema, required=True)
    metrics = fields.Nested(MetricsSchema, required=True)
    dev_key = fields.Boolean(required=True)
    auto_migrate = fields.Boolean(required=True)
    config_path = Text()  # set by the loader: the file that was read

    @validates("secured")
    def _complete_policy(self, value: Mapping[str, Any], **kwargs: Any) -> None:
        missing = sorted({"required", "on_failure", "on_sealed"} - set(value))
        if missing:
            raise ValidationError(f"missing {', '.join(missing)}")


# -- checking ---------------------------------------------------------------------------------
def check_settings(settings: Mapping[str, Any], origins: Origins | None = None) -> dict[str, Any]:
    """Load ``settings`` through the schema; raise one ConfigError listing every problem."""
    from publisher.secured import check_policies  # envelopes load lazily: the CLI starts fast

    try:
        loaded = SettingsSchema().load(settings)
    except ValidationError as exc:
        raise config_error(exc.messages, origins or {}) from None
    check_policies(loaded)  # a policy that would be a padding oracle stops every command
    return loaded


def config_error(
    messages: Any, origins: Origins, prefix: tuple[str, ...] = (), plugin: str | None = None
) -> ConfigError:
    """One ConfigError whose ``errors`` map ``key path (origin)`` to messages."""
    errors: dict[str, list[str]] = {}
    for path, texts in flatten_errors(messages, prefix):
        where = format_path(path)
        origin = origin_of(path, origins)
        label = where if origin in (None, "default") else f"{where} (from {origin})"
        if plugin:
            label = f"plugin {plugin}: {label}"
        errors.setdefault(label, []).extend(texts)
    return problems(errors)


def problems(errors: dict[str, list[str]]) -> ConfigError:
    """The error for ``errors``; its message lists them too, for logs and test reports."""
    count = sum(len(v) for v in errors.values())
    listed = "; ".join(f"{path}: {m}" for path, texts in errors.items() for m in texts)
    return ConfigError(
        f"{count} configuration problem{'s' * (count != 1)}: {listed}", errors=errors
    )


def flatten_errors(messages: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple, list]]:
    """marshmallow's nested messages as (key path, [messages]); ``Dict`` levels unwrapped."""
    if isinstance(messages, list | tuple):
        texts = [m for m in messages if isinstance(m, str)]
        if texts:
            yield prefix, texts
        for item in messages:
            if isinstance(item, Mapping):
                yield from flatten_errors(item, prefix)
        return
    if not isinstance(messages, Mapping):
        yield prefix, [str(messages)]
        return
    for key, value in messages.items():
        if key == "value" and prefix:  # fields.Dict's value errors: the key is the level above
            yield from flatten_errors(value, prefix)
        elif key == "key" and prefix:
            yield from ((p, [f"key: {m}" for m in t]) for p, t in flatten_errors(value, prefix))
        elif key == "_schema":
            yield from flatten_errors(value, prefix)
        else:
            yield from flatten_errors(value, (*prefix, key))


def format_path(path: tuple) -> str:
    """``("plugins", "webhook", "subscribers", 0)`` -> ``plugins.webhook.subscribers[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def origin_of(path: tuple, origins: Origins) -> str | None:
    keys = tuple(p for p in path if not isinstance(p, int))
    for length in range(len(keys), 0, -1):
        if keys[:length] in origins:
            return origins[keys[:length]]
    return None


# -- the schema of a key, for typing environment values ----------------------------------------
def field_at(path: tuple[str, ...], schema: Schema | None = None) -> fields.Field | None:
    """The field that will load ``path`` (None when no schema knows it, e.g. a plugin's key)."""
    current: Any = schema or SettingsSchema()
    found: fields.Field | None = None
    for part in path:
        if isinstance(current, fields.Dict):
            current = current.value_field
            found = current
            if isinstance(current, fields.Nested):
                current = current.schema
            continue
        if not isinstance(current, Schema) or part not in current.fields:
            return None
        found = current.fields[part]
        current = found.schema if isinstance(found, fields.Nested) else found
    return found


def takes_text(field: fields.Field | None) -> bool:
    """Whether a value for ``field`` is text as written (not parsed as JSON first)."""
    return isinstance(field, fields.String)


def known_top_level(name: str) -> bool:
    return name in SettingsSchema().fields


# -- plugins' own sections ------------------------------------------------------------------
def plugin_schemas(pm: pluggy.PluginManager) -> dict[str, Schema]:
    """``register_config_schema`` answers by plugin name (the name of its section)."""
    found: dict[str, Schema] = {}
    for impl in pm.hook.register_config_schema.get_hookimpls():
        answer = impl.function()
        if answer is None:
            continue
        schema = answer() if isinstance(answer, type) else answer
        if not isinstance(schema, Schema):
            raise ConfigError(
                f"plugin {impl.plugin_name}: register_config_schema returned {answer!r}, "
                "not a marshmallow Schema"
            )
        found[impl.plugin_name] = schema
    return found


def check_plugin_settings(
    pm: pluggy.PluginManager,
    settings: dict[str, Any],
    origins: Origins | None = None,
    raw_env: Mapping[tuple[str, ...], str] | None = None,
) -> None:
    """Load each plugin's section through its schema, in place; one error for all problems.

    A section that names no loaded (or disabled) plugin is logged as a warning.
    ``raw_env`` holds environment values as written, so that a plugin's text field gets
    ``007`` rather than the number JSON made of it.
    """
    origins = origins if origins is not None else getattr(settings, "origins", {})
    raw_env = raw_env if raw_env is not None else getattr(settings, "raw_env", {})
    sections = settings["plugins"]
    schemas = plugin_schemas(pm)
    loaded = {name for name, _ in pm.list_name_plugin()} | set(sections.get("disabled") or [])
    found: dict[str, list[str]] = {}
    for name in sorted(set(sections) - CORE_PLUGIN_KEYS):
        if name not in loaded:
            # not an error: one file may serve hosts where an optional plugin is absent
            log.warning("plugins.%s: no plugin of that name is loaded; section ignored", name)
            continue
        schema = schemas.get(name)
        if schema is None:
            continue
        section = _with_text_env(sections[name], schema, ("plugins", name), raw_env)
        try:
            sections[name] = schema.load(section or {})
        except ValidationError as exc:
            error = config_error(exc.messages, origins, ("plugins", name), plugin=name)
            found.update(error.errors)
        except Exception as exc:  # noqa: BLE001 - a plugin's own validator broke: one line
            found[f"plugin {name}: plugins.{name}"] = [f"its schema failed: {exc!r}"]
    for name, schema in schemas.items():
        if name not in sections:
            try:
                sections[name] = schema.load({})
            except ValidationError as exc:
                error = config_error(exc.messages, origins, ("plugins", name), plugin=name)
                found.update(error.errors)
    if found:
        raise problems(found)


def _with_text_env(
    section: Any, schema: Schema, prefix: tuple[str, ...], raw_env: Mapping[tuple[str, ...], str]
) -> Any:
    """Put back the written text of env values whose field in ``schema`` is a string."""
    if not isinstance(section, dict):
        return section
    section = dict(section)
    for path, raw in raw_env.items():
        if path[: len(prefix)] != prefix or len(path) != len(prefix) + 1:
            continue
        if takes_text(field_at(path[len(prefix) :], schema)):
            section[path[-1]] = raw
    return section
