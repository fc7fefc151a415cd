"""What an ``open`` ticket carries for Tier-1 triage (seed 003: symptoms, logs, state).

``collect_diagnostics`` gathers, size-capped:

- ``metrics``: the metric window that triggered the incident (passed in by the caller);
- ``host``: load average, memory, disk use and the state of the component's configured
  processes (``components.<name>.processes``), from psutil;
- ``log_excerpt``: the last lines of the component's ``log_files``, tail-style.

The psutil calls are passed in (``HostProbe``), so tests use fixtures instead of the
machine they run on. Secrets in log lines are cut later by the outbox's redaction step,
which every outgoing body goes through.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_CHARS = 500

# psutil is imported on first use (an incident's open), not when the daemon starts.


def _loadavg() -> tuple[float, float, float]:
    import psutil

    return psutil.getloadavg()


def _memory() -> Any:
    import psutil

    return psutil.virtual_memory()


def _disk(path: str) -> Any:
    import psutil

    return psutil.disk_usage(path)


def _processes() -> Iterable[dict[str, Any]]:
    import psutil

    attrs = ["pid", "name", "cmdline", "status", "memory_info", "create_time"]
    for process in psutil.process_iter(attrs):
        yield process.info


def _cpu_count() -> int | None:
    import psutil

    return psutil.cpu_count()


@dataclass(frozen=True)
class HostProbe:
    """The host calls diagnostics make; replace any of them in tests."""

    loadavg: Callable[[], tuple[float, float, float]] = _loadavg
    memory: Callable[[], Any] = _memory
    disk: Callable[[str], Any] = _disk
    processes: Callable[[], Iterable[dict[str, Any]]] = _processes
    cpu_count: Callable[[], int | None] = _cpu_count


@dataclass(frozen=True)
class DiagnosticsLimits:
    log_lines: int = 50
    max_bytes: int = 32 * 1024  # of the whole diagnostics object, as JSON
    disk_paths: Sequence[str] = field(default_factory=lambda: ["/"])


def host_facts(
    process_names: Sequence[str], probe: HostProbe, disk_paths: Sequence[str] = ("/",)
) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        load1, load5, load15 = probe.loadavg()
        facts["load"] = {"1m": round(load1, 2), "5m": round(load5, 2), "15m": round(load15, 2)}
        facts["cpus"] = probe.cpu_count()
    except OSError as exc:
        facts["load"] = {"error": str(exc)}
    try:
        memory = probe.memory()
        facts["memory"] = {
            "total_bytes": int(memory.total),
            "available_bytes": int(memory.available),
            "used_percent": float(memory.percent),
        }
    except OSError as exc:
        facts["memory"] = {"error": str(exc)}
    disks: dict[str, Any] = {}
    for path in disk_paths:
        try:
            usage = probe.disk(path)
            disks[path] = {"free_bytes": int(usage.free), "used_percent": float(usage.percent)}
        except OSError as exc:
            disks[path] = {"error": exc.strerror or str(exc)}
    facts["disk"] = disks
    if process_names:
        facts["processes"] = process_states(process_names, probe)
    return facts


def process_states(names: Sequence[str], probe: HostProbe) -> dict[str, Any]:
    """Per configured name: whether it runs, how many, their states and memory."""
    import psutil

    found: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        processes = list(probe.processes())
    except (OSError, psutil.Error) as exc:
        return {name: {"error": str(exc)} for name in names}
    for info in processes:
        cmdline = info.get("cmdline") or []
        candidates = {info.get("name") or ""}
        if cmdline:
            candidates.add(os.path.basename(cmdline[0]))
        for name in names:
            if name in candidates:
                memory = info.get("memory_info")
                found[name].append(
                    {
                        "pid": info.get("pid"),
                        "status": info.get("status"),
                        "rss_bytes": int(memory.rss) if memory is not None else None,
                    }
                )
    states: dict[str, Any] = {}
    for name, matches in found.items():
        statuses = sorted({str(m["status"]) for m in matches})
        running = any(s not in ("zombie", "dead", "stopped") for s in statuses)
        states[name] = {
            "running": running,
            "count": len(matches),
            "statuses": statuses,
            "instances": matches[:5],
        }
    return states


def tail_lines(path: Path, lines: int, chunk: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of a file, reading only its end.

    Only regular files are read, opened non-blocking: a FIFO or a device named as a log
    file would otherwise block the reader for good.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror or exc})"]
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [f"(not reading {path}: not a regular file)"]
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chunk))
            data = handle.read()
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror or exc})"]
    finally:
        if fd >= 0:
            os.close(fd)
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > chunk and text:
        text = text[1:]  # the first line is cut in the middle
    return [line[:MAX_LINE_CHARS] for line in text[-lines:]]


def log_excerpt(paths: Sequence[Path], lines: int) -> list[str]:
    excerpt: list[str] = []
    for path in paths:
        if len(paths) > 1:
            excerpt.append(f"==> {path} <==")
        excerpt.extend(tail_lines(path, lines))
    return excerpt


def collect_diagnostics(
    *,
    metrics: dict[str, Any] | None,
    process_names: Sequence[str],
    log_files: Sequence[Path],
    probe: HostProbe | None = None,
    limits: DiagnosticsLimits | None = None,
) -> dict[str, Any]:
    """The ``diagnostics`` object of an open event, at most ``limits.max_bytes`` as JSON.

    When over the cap, the oldest log lines go first, then the host's process list.
    """
    probe = probe or HostProbe()
    limits = limits or DiagnosticsLimits()
    result: dict[str, Any] = {
        "metrics": metrics or {},
        "host": host_facts(process_names, probe, limits.disk_paths),
        "log_excerpt": log_excerpt(log_files, limits.log_lines),
    }
    return cap_size(result, limits.max_bytes)


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def cap_size(diagnostics: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    excerpt = list(diagnostics.get("log_excerpt") or [])
    trimmed = False
    while excerpt and _size({**diagnostics, "log_excerpt": excerpt}) > max_bytes:
        excerpt.pop(0)
        trimmed = True
    diagnostics = {**diagnostics, "log_excerpt": excerpt}
    if trimmed:
        diagnostics["truncated"] = True
    if _size(diagnostics) > max_bytes and "processes" in diagnostics.get("host", {}):
        host = {k: v for k, v in diagnostics["host"].items() if k != "processes"}
        diagnostics = {**diagnostics, "host": host, "truncated": True}
    if _size(diagnostics) > max_bytes:
        diagnostics = {"truncated": True, "metrics": {}, "host": {}, "log_excerpt": []}
    return diagnostics
