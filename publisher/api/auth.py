"""Bearer-token authentication for the management API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from publisher.api.limits import check_token_rate
from publisher.tokens import Principal, authenticate_cached, require_scope

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_token(scope: str) -> Principal:
    services = current_app.extensions["publisher"]
    # a live token is remembered for a second (TokenCache); else one light read
    token = authenticate_cached(services.token_cache, bearer_token(), services.engine.connect)
    check_token_rate(current_app, token.id)
    require_scope(token, scope)
    g.token = token
    return token


def requires(scope: str) -> Callable[[F], F]:
    """Decorate a view: 401 without a valid token, 403 without ``scope``; and say so in the
    OpenAPI document (security, 401/403/429/503: ``publisher.api.openapi``)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            current_token(scope)
            return view(*args, **kwargs)

        return needs(scope)(wrapped)  # type: ignore[return-value]

    return decorator


def needs(scope: str) -> Callable[[F], F]:
    """Document a view's token (``any``: any live token) when the view checks it itself."""

    def decorator(view: F) -> F:
        view._apidoc = {**getattr(view, "_apidoc", {}), "auth": scope}  # type: ignore[attr-defined]
        return view

    return decorator


def may_read_protected() -> bool:
    token = g.get("token")
    return token is not None and bool({"read-protected", "admin"} & set(token.scopes))
