"""The upstream types: one module each, found by looking in this package.

Each module holds its config model (``<Name>Upstream``, a ``UpstreamBase`` with
``type: Literal["<name>"]``), its adapter (``Adapter`` with an explicit ``EVENTS`` map)
and its registration ``UPSTREAM = UpstreamType(name, model, adapter)``. Adding an
upstream type is adding one module (and its test and README/config.yaml example): the
config union, ``check-config`` and ``build_adapters`` pick it up from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from typing import Any

from ccwatch.tickets.adapters.base import (
    IGNORE,
    Adapter,
    AdapterContext,
    RecordingAdapter,
    TicketEvent,
    UpstreamBase,
    UpstreamType,
)

ESCALATION_EMAIL = "escalation-email"
"""The built-in upstream that mails the addresses named by an escalation level."""


def _discover() -> dict[str, UpstreamType]:
    found: dict[str, UpstreamType] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        upstream = getattr(module, "UPSTREAM", None)
        if not isinstance(upstream, UpstreamType):
            raise ImportError(f"{module.__name__} has no UPSTREAM = UpstreamType(...)")
        if upstream.name in found:
            raise ImportError(f"two upstream modules register type {upstream.name!r}")
        found[upstream.name] = upstream
    return found


_found: dict[str, UpstreamType] | None = None


def upstream_types() -> dict[str, UpstreamType]:
    """Every upstream type by name, discovered on first use: at import time a module of
    this package (a desk adapter importing ``tickets.desk``, which imports ``base``) may
    itself be what is being imported, and discovering then would import it half-made."""
    global _found
    if _found is None:
        _found = _discover()
    return _found


def __getattr__(name: str) -> Any:
    """``UPSTREAMS`` (type name → registration) and ``ADAPTERS`` (type name → adapter
    factory), built on first access (PEP 562)."""
    if name == "UPSTREAMS":
        return upstream_types()
    if name == "ADAPTERS":
        return {type_name: u.adapter for type_name, u in upstream_types().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_adapters(
    upstreams: Sequence[Any], context: AdapterContext, escalation_email: bool = False
) -> dict[str, Adapter]:
    """Adapters of the enabled upstreams by name (plus ``escalation-email`` if asked)."""
    adapters = {
        upstream.upstream_name: upstream_types()[upstream.type].adapter(upstream, context)
        for upstream in upstreams
        if upstream.enabled
    }
    if escalation_email and context.email is not None and ESCALATION_EMAIL not in adapters:
        email = upstream_types()["email"]
        config = email.model.model_validate(
            {"type": "email", "name": ESCALATION_EMAIL, "to": ["escalation@invalid"]}
        )
        adapters[ESCALATION_EMAIL] = email.adapter(config, context, escalation_targets=True)  # type: ignore[call-arg]
    return adapters


__all__ = [
    "ADAPTERS",
    "ESCALATION_EMAIL",
    "IGNORE",
    "UPSTREAMS",
    "Adapter",
    "AdapterContext",
    "RecordingAdapter",
    "TicketEvent",
    "UpstreamBase",
    "UpstreamType",
    "build_adapters",
    "upstream_types",
]
