"""The check types, by their ``type:`` name in a checklist file.

One module per type, each with its own parameter model (``<Type>Params``) and an async
``run(params, env)``; ``REGISTRY`` maps the name to both. To add a type: write the
module, list its ``CHECK`` here, and add an example to ``checklists/daily.yaml`` (a test
checks the shipped file covers every registered type).

The type modules are imported on the first use of ``REGISTRY`` (a checklist file to
validate or run), not with this package: a daemon without checklists does not load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccwatch.checklists.checks.base import CheckEnv, CheckType, HostProbes
from ccwatch.checklists.config import CheckSettings

if TYPE_CHECKING:
    REGISTRY: dict[str, CheckType[Any]]


def _registry() -> dict[str, CheckType[Any]]:
    from ccwatch.checklists.checks import (
        agent_capacity,
        backup_age,
        certificate,
        command,
        component_processes,
        cpu_load,
        disk,
        file_age,
        log_errors,
        memory,
        mqtt_freshness,
        ntp,
        postgres,
        process,
        reachability,
        retention,
        sip_options,
        swap,
        tcp_port,
        ups,
    )

    return {
        check.name: check
        for check in (
            process.CHECK,
            component_processes.CHECK,
            disk.CHECK,
            memory.CHECK,
            cpu_load.CHECK,
            swap.CHECK,
            tcp_port.CHECK,
            reachability.CHECK,
            sip_options.CHECK,
            postgres.CHECK,
            retention.CHECK,
            backup_age.CHECK,
            file_age.CHECK,
            log_errors.CHECK,
            certificate.CHECK,
            ntp.CHECK,
            mqtt_freshness.CHECK,
            agent_capacity.CHECK,
            ups.CHECK,
            command.CHECK,
        )
    }


def __getattr__(name: str) -> Any:
    """``REGISTRY``, built on its first use (PEP 562) and kept as a module attribute."""
    if name == "REGISTRY":
        registry = _registry()
        globals()["REGISTRY"] = registry
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REGISTRY", "CheckEnv", "CheckSettings", "CheckType", "HostProbes"]
