"""The ``webhook`` outputs: forward events to downstream subscribers, signed.

One output per subscriber, named ``webhook:<name>``, so each subscriber has its own delivery
status, retries and on/off switch (a ``410 Gone`` turns only that one off).

Requests are signed per Standard Webhooks with the ``standardwebhooks`` library; the
``webhook-id`` is the event's ``delivery_id``, stable across retries, so a subscriber can drop
duplicates. Server-side request forgery is guarded against by resolving the host, refusing
private, loopback, link-local, multicast, reserved and cloud-metadata addresses, and then
connecting to the address that was checked (no second lookup an attacker could rebind).
Redirects are never followed: a ``3xx`` is a failed attempt that names the new location.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from marshmallow import Schema, ValidationError, fields, validate, validates
from standardwebhooks.webhooks import Webhook

from publisher.errors import ConfigError
from publisher.hookspecs import hookimpl
from publisher.outputs import DeliveryError, Event, OutputRecord
from publisher.subscription import EVENTS, NAME, SubscriberSchema

DEFAULT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 86400.0
USER_AGENT = "publisher-webhook/1"

#: Never reachable, even with ``allow_private``: cloud instance-metadata services.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@hookimpl
def register_outputs(config: Mapping[str, Any]) -> list[WebhookOutput]:
    options = (config.get("plugins") or {}).get("webhook") or {}
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    allow_private = bool(options.get("allow_private", False))
    outputs: list[WebhookOutput] = []
    for index, sub in enumerate(options.get("subscribers") or []):
        outputs.append(_subscriber(sub, index, timeout, allow_private))
    names = [output.name for output in outputs]
    if len(set(names)) != len(names):
        raise ConfigError("plugins.webhook.subscribers: names must be unique")
    return outputs


class SubscriberSettings(SubscriberSchema):
    """One downstream subscriber of ``plugins.webhook.subscribers``."""


class WebhookSettings(Schema):
    """``plugins.webhook``, checked at start through ``register_config_schema``."""

    timeout = fields.Float(
        load_default=DEFAULT_TIMEOUT, validate=validate.Range(min=0, min_inclusive=False)
    )
    allow_private = fields.Boolean(load_default=False)
    subscribers = fields.List(fields.Nested(SubscriberSettings), load_default=list)

    @validates("subscribers")
    def _unique_names(self, subscribers: list[dict[str, Any]], **kwargs: Any) -> None:
        names = [sub.get("name") for sub in subscribers]
        if len(set(names)) != len(names):
            raise ValidationError("names must be unique")


@hookimpl
def register_config_schema() -> type[Schema]:
    return WebhookSettings


@hookimpl
def subscriber_output(
    subscriber: Mapping[str, Any],
    previous: tuple[tuple[str, float], ...],
    config: Mapping[str, Any],
) -> WebhookOutput:
    """The output of one subscriber kept in the database (``/api/v1/subscribers``).

    Same checks as a YAML subscriber; ``previous`` holds rotated-out secrets with the time
    (epoch seconds) until which they still sign beside the current one.
    """
    options = (config.get("plugins") or {}).get("webhook") or {}
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    allow_private = bool(options.get("allow_private", False))
    output = _subscriber(subscriber, 0, timeout, allow_private, "subscriber")
    output.previous = tuple((Webhook(secret), until) for secret, until in previous)
    return output


def _subscriber(
    sub: Any, index: int, timeout: float, allow_private: bool, where: str | None = None
) -> WebhookOutput:
    """Check one subscriber's section and build its output; fail loudly at start-up."""
    where = where or f"plugins.webhook.subscribers[{index}]"
    if not isinstance(sub, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    name = str(sub.get("name", ""))
    if not NAME.match(name):
        raise ConfigError(f"{where}.name must be 1-64 letters, digits, '.', '_' or '-'")
    url = str(sub.get("url", ""))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url must be an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"{where}.url must not carry credentials")
    secret = str(sub.get("secret", ""))
    try:
        signer = Webhook(secret)
    except Exception:
        raise ConfigError(f"{where}.secret must be a whsec_... secret") from None
    if not secret.startswith("whsec_"):
        raise ConfigError(f"{where}.secret must be a whsec_... secret")
    events = tuple(sub.get("events") or EVENTS)
    if not set(events) <= set(EVENTS):
        raise ConfigError(f"{where}.events must be among {', '.join(EVENTS)}")
    return WebhookOutput(
        name=f"webhook:{name}",
        url=url,
        signer=signer,
        events=events,
        allow_private=bool(sub.get("allow_private", allow_private)),
        accepts_protected=bool(sub.get("protected", False)),
        timeout=float(sub.get("timeout", timeout)),
    )


@dataclass
class WebhookOutput:
    """Sends one signed POST per event to one subscriber."""

    name: str
    url: str
    signer: Webhook = field(repr=False)
    events: tuple[str, ...] = EVENTS
    allow_private: bool = False
    accepts_protected: bool = False
    timeout: float = DEFAULT_TIMEOUT
    #: rotated-out signers and until when (epoch seconds) they still sign, during a rotation
    previous: tuple[tuple[Webhook, float], ...] = field(default=(), repr=False)

    def publish(self, record: OutputRecord, event: Event) -> None:
        self._send(record, event)

    def retract(self, record: OutputRecord, event: Event) -> None:
        self._send(record, event)

    def _send(self, record: OutputRecord, event: Event) -> None:
        if event.kind not in self.events:
            return  # not subscribed: nothing to do, and nothing failed
        body = json.dumps(self.payload(record, event), ensure_ascii=False, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event.delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signature(event.delivery_id, now, body),
        }
        status, response_headers = post(
            self.url, body.encode("utf-8"), headers, self.timeout, self.allow_private
        )
        check_response(status, response_headers)

    def signature(self, msg_id: str, now: datetime, body: str) -> str:
        """The current secret's signature, then each rotated-out one's still in its grace.

        Standard Webhooks receivers accept a header of space-separated signatures if any
        one verifies, so a receiver holding either secret accepts every delivery.
        """
        signatures = [self.signer.sign(msg_id, now, body)]
        signatures += [
            old.sign(msg_id, now, body) for old, until in self.previous if until > now.timestamp()
        ]
        return " ".join(signatures)

    def payload(self, record: OutputRecord, event: Event) -> dict[str, Any]:
        """The JSON body; protected fields only for subscribers cleared to receive them."""
        data: dict[str, Any] = {
            "id": record.id,
            "revision": event.revision,
            "record": dict(record.fields),
        }
        if record.body:
            data["body"] = record.body
        if self.accepts_protected and record.protected is not None:
            data["protected"] = dict(record.protected)
        return {
            "type": f"record.{event.kind}",
            "timestamp": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> tuple[int, Mapping[str, str]]:
    """POST to the checked address of ``url``; return status and headers. Never redirects."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_checked(host, port, allow_private)
    pool_options: dict[str, Any] = {
        "port": port,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "retries": False,
        "maxsize": 1,
    }
    if parts.scheme == "https":
        # TLS is verified against the URL's host name, while the socket goes to the IP.
        pool_options |= {"server_hostname": host, "assert_hostname": host}
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(address, **pool_options)
    else:
        pool = urllib3.HTTPConnectionPool(address, **pool_options)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" + (f":{parts.port}" if parts.port else "")
    try:
        response = pool.urlopen(
            "POST",
            target,
            body=body,
            headers={**headers, "host": host_header},
            redirect=False,
            preload_content=False,
        )
        try:
            response.read(65536)  # drain a little so the connection closes cleanly
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise DeliveryError(f"request to {host} failed: {type(exc).__name__}") from None
    finally:
        pool.close()
    return response.status, dict(response.headers)


def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """Resolve ``host`` and return an address it is safe to connect to.

    Every address the name resolves to must pass, not just the first: a name that mixes a
    public and a private address is refused. Refusal is permanent (a policy, not a glitch).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise DeliveryError(f"cannot resolve {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise DeliveryError(f"cannot resolve {host}")
    for address in addresses:
        reason = refusal(address, allow_private)
        if reason:
            raise DeliveryError(f"refused {host}: {address} is {reason}", permanent=True)
    return addresses[0]


def refusal(address: str, allow_private: bool) -> str | None:
    """Why ``address`` may not be contacted, or ``None`` if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        )
        if embedded is not None:
            ip = embedded
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_multicast or ip.is_unspecified:
        return "a multicast or unspecified address"
    if allow_private or ip.is_global:
        return None
    for label in ("loopback", "link_local", "private", "reserved"):
        if getattr(ip, f"is_{label}"):
            return f"a {label.replace('_', '-')} address"
    return "not a public address"


def check_response(status: int, headers: Mapping[str, str]) -> None:
    """Turn a subscriber's answer into success or a :class:`DeliveryError`."""
    if 200 <= status < 300:
        return
    if status == 410:
        raise DeliveryError("subscriber answered 410 Gone", disable_output=True)
    lowered = {key.lower(): value for key, value in headers.items()}
    if 300 <= status < 400:
        location = lowered.get("location", "?")[:200]
        raise DeliveryError(f"subscriber redirected ({status}) to {location}; not followed")
    if status in (429, 503):
        delay = parse_retry_after(lowered.get("retry-after"))
        raise DeliveryError(f"subscriber answered {status}", retry_after=delay)
    raise DeliveryError(f"subscriber answered {status}")


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (bounded to a day), from seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
