"""``reachability``: the configured gateways and SIP trunks answer on the network.

Each target is probed at once, all within ``timeout``:

- ``tcp``: a TCP connection is accepted (refused, unreachable or silent fails);
- ``udp``: a datagram (``payload``, default CRLF CRLF, the SIP keep-alive of RFC 5626,
  which SIP stacks ignore) is sent on a connected socket. A reply
  passes; an ICMP "port unreachable" (the kernel reports it as "Connection refused")
  fails. UDP has no handshake, so silence proves only that nothing refused: it passes
  with "no reply (not refused)" unless ``expect_reply: true``, where it fails. A SIP
  endpoint is better judged by ``sip_options``, which gets a real answer.

One line per target in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Literal

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, describe_os_error, udp_peer
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration


class ReachabilityTarget(StrictModel):
    name: str | None = Field(None, description="shown in the report (default host:port)")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    payload: str = Field("\r\n\r\n", min_length=1, description="udp: the datagram sent (text)")
    expect_reply: bool = Field(False, description="udp: a target that stays silent fails")


class ReachabilityParams(StrictModel):
    targets: list[ReachabilityTarget] = Field(min_length=1)
    timeout: Duration = Field(timedelta(seconds=3), description="per target, probed at once")


def _label(target: ReachabilityTarget) -> str:
    where = f"{target.protocol}/{target.host}:{target.port}"
    return f"{target.name} ({where})" if target.name else where


async def _tcp(target: ReachabilityTarget, timeout: float) -> tuple[bool, str]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(target.host, target.port)
    except TimeoutError:
        return False, "no answer (dropped by a firewall, or the host is down)"
    except OSError as exc:
        return False, describe_os_error(exc)
    elapsed_ms = (time.perf_counter() - started) * 1000
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"connected in {elapsed_ms:.1f} ms"


async def _udp(target: ReachabilityTarget, timeout: float) -> tuple[bool, str]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout), udp_peer(target.host, target.port) as peer:
            peer.send(target.payload.encode())
            reply = await peer.receive()
    except TimeoutError:
        if target.expect_reply:
            return False, "no reply"
        return True, "no reply (not refused)"
    except OSError as exc:
        return False, describe_os_error(exc)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return True, f"replied ({len(reply)} bytes) in {elapsed_ms:.1f} ms"


async def probe(target: ReachabilityTarget, timeout: float) -> tuple[bool, str]:
    """(reachable, what was seen) for one target."""
    if target.protocol == "tcp":
        return await _tcp(target, timeout)
    return await _udp(target, timeout)


async def run(params: ReachabilityParams, env: CheckEnv) -> Outcome:
    timeout = params.timeout.total_seconds()
    results = await asyncio.gather(*(probe(target, timeout) for target in params.targets))
    lines = [
        f"{_label(target)}: {'ok' if ok else 'UNREACHABLE'}: {seen}"
        for target, (ok, seen) in zip(params.targets, results, strict=True)
    ]
    down = [
        f"{_label(target)}: {seen}"
        for target, (ok, seen) in zip(params.targets, results, strict=True)
        if not ok
    ]
    threshold = f"every target answers within {format_duration(params.timeout)}"
    count = len(params.targets)
    if down:
        return Outcome(
            Status.FAIL,
            f"{len(down)} of {count} unreachable: {'; '.join(down)}",
            threshold,
            "check the gateway/trunk, the route and firewalls between it and this host "
            "(`ip route get <host>`, `nc -vz <host> <port>`)",
            "\n".join(lines),
        )
    return Outcome(Status.OK, f"{count} of {count} reachable", threshold, detail="\n".join(lines))


CHECK = CheckType(
    "reachability", ReachabilityParams, run, "gateways and trunks answer (TCP connect, UDP probe)"
)
