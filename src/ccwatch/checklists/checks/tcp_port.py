"""``tcp_port``: a host:port accepts a TCP connection within a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, describe_os_error
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration


class TcpPortParams(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    connect_timeout: Duration = timedelta(seconds=3)
    service: str | None = Field(None, description="what listens there, named in the hint")


async def run(params: TcpPortParams, env: CheckEnv) -> Outcome:
    target = f"{params.host}:{params.port}"
    threshold = f"connects within {format_duration(params.connect_timeout)}"
    what = params.service or f"the service on port {params.port}"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(params.connect_timeout.total_seconds()):
            _, writer = await asyncio.open_connection(params.host, params.port)
    except TimeoutError:
        return Outcome(
            Status.FAIL,
            f"{target}: no answer",
            threshold,
            f"a firewall drops the connection or {what} hangs; check it on {params.host}",
        )
    except OSError as exc:
        return Outcome(
            Status.FAIL,
            f"{target}: {describe_os_error(exc)}",
            threshold,
            f"start {what} or check that it listens on {target}",
        )
    elapsed_ms = (time.perf_counter() - started) * 1000
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(Status.OK, f"{target}: connected in {elapsed_ms:.1f} ms", threshold)


CHECK = CheckType("tcp_port", TcpPortParams, run, "a host:port accepts connections")
