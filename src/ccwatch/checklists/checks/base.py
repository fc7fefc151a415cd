"""What every check type is made of, and what checks may touch on the host.

A check type is a parameter model plus an async ``run(params, env) -> Outcome``. Host
checks never call psutil or ``os`` directly: they go through ``env.host`` (``HostProbes``),
so tests hand in fixtures instead of patching, and blocking probes run in a thread
(``run_blocking``, a daemon thread) so a slow NFS mount never stalls the event loop
and a probe that hangs for good is abandoned at its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import threading
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel

from ccwatch.checklists.config import CheckSettings
from ccwatch.checklists.result import Outcome, Status

P = TypeVar("P", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class DiskSpace:
    total_bytes: int
    free_bytes: int  # available to unprivileged users, as `df` shows it
    inodes_total: int  # 0 when the filesystem has no fixed inode table (btrfs, overlay)
    inodes_free: int


@dataclass(frozen=True)
class MemoryUse:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    cmdline: tuple[str, ...]


@dataclass(frozen=True)
class CommandOutput:
    exit_code: int
    output: str  # stdout and stderr, interleaved


# psutil is imported on first use (a check's run), not when the daemon starts.


def disk_space(path: str) -> DiskSpace:
    import psutil

    usage = psutil.disk_usage(path)
    stats = os.statvfs(path)
    return DiskSpace(usage.total, usage.free, stats.f_files, stats.f_favail)


def virtual_memory() -> MemoryUse:
    import psutil

    memory = psutil.virtual_memory()
    return MemoryUse(memory.total, memory.available)


def swap_memory() -> MemoryUse:
    import psutil

    swap = psutil.swap_memory()
    return MemoryUse(swap.total, swap.free)


def list_processes() -> list[ProcessInfo]:
    import psutil

    found: list[ProcessInfo] = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        info = process.info
        found.append(ProcessInfo(info["pid"], info["name"] or "", tuple(info["cmdline"] or ())))
    return found


_COMMAND_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
}


async def run_command(
    argv: Sequence[str], timeout: float | None, max_output: int = 65536
) -> CommandOutput:
    """Run ``argv`` without a shell, in its own process group, killed at ``timeout``.

    Raises TimeoutError (after killing the whole group) or OSError (not found, not
    executable).
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_COMMAND_ENV,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            assert process.stdout is not None
            output = bytearray()
            # Read to the end (a chatty command must not block on a full pipe), keep the start.
            while chunk := await process.stdout.read(65536):
                output += chunk[: max(0, max_output - len(output))]
            await process.wait()
    except BaseException:
        # Timed out or cancelled: the command and anything it started must not linger.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        raise
    return CommandOutput(process.returncode or 0, output.decode("utf-8", errors="replace"))


async def run_blocking(function: Callable[..., T], *args: object) -> T:
    """``asyncio.to_thread`` on a daemon thread of its own.

    A probe stuck in the kernel (statvfs on a hung NFS mount) is abandoned at the check's
    timeout; with the default executor it would still keep ``ccwatch checklist run`` from
    exiting, and occupy a worker of the daemon's pool forever.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the check timed out meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(typing.cast(T, result))

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=target, name="ccwatch-check-probe", daemon=True).start()
    return await future


@dataclass(frozen=True)
class HostProbes:
    """The host functions checks use; tests replace any of them with fixtures."""

    disk_space: Callable[[str], DiskSpace] = disk_space
    virtual_memory: Callable[[], MemoryUse] = virtual_memory
    swap_memory: Callable[[], MemoryUse] = swap_memory
    load_average: Callable[[], tuple[float, float, float]] = os.getloadavg
    cpu_count: Callable[[], int | None] = os.cpu_count
    processes: Callable[[], Iterable[ProcessInfo]] = list_processes
    run_command: Callable[[Sequence[str], float | None], Awaitable[CommandOutput]] = run_command
    which: Callable[[str], str | None] = shutil.which


@dataclass(frozen=True)
class CheckEnv:
    """Everything a check may use besides its own parameters."""

    config: CheckSettings
    host: HostProbes = field(default_factory=HostProbes)
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class CheckType(Generic[P]):
    """A registered check type: its ``type:`` name, parameter model and run function."""

    name: str
    params: type[P]
    run: Callable[[P, CheckEnv], Awaitable[Outcome]]
    summary: str


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def grade_high(value: float, warn_above: float | None, fail_above: float | None) -> Status:
    """FAIL when ``value`` exceeds ``fail_above``, WARN above ``warn_above``, else OK."""
    if fail_above is not None and value > fail_above:
        return Status.FAIL
    if warn_above is not None and value > warn_above:
        return Status.WARN
    return Status.OK


def grade_age(age_seconds: float, warn_age: timedelta | None, fail_age: timedelta) -> Status:
    """``grade_high`` for a file's age against the check's ``warn_age`` / ``fail_age``."""
    warn = warn_age.total_seconds() if warn_age is not None else None
    return grade_high(age_seconds, warn, fail_age.total_seconds())


def grade_low(value: float, warn_below: float | None, fail_below: float | None) -> Status:
    """FAIL when ``value`` is under ``fail_below``, WARN under ``warn_below``, else OK."""
    if fail_below is not None and value < fail_below:
        return Status.FAIL
    if warn_below is not None and value < warn_below:
        return Status.WARN
    return Status.OK


def thresholds(unit: str, warn: float | None, fail: float | None, word: str) -> str:
    """'fail below 10%, warn below 20%' (word is 'below' or 'above')."""
    parts = []
    if fail is not None:
        parts.append(f"fail {word} {fail:g}{unit}")
    if warn is not None:
        parts.append(f"warn {word} {warn:g}{unit}")
    return ", ".join(parts) or "none"


class UdpPeer(asyncio.DatagramProtocol):
    """A connected UDP socket: ``send`` datagrams to the peer, ``receive`` its answers.

    Connected, so the kernel delivers the peer's ICMP errors ("port unreachable") to
    this socket: ``receive`` raises them as OSError (ConnectionRefusedError).
    """

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        self._inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self._inbox.put_nowait(exc)

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.sendto(data)

    async def receive(self) -> bytes:
        """The next datagram from the peer; raises the ICMP error the kernel reported."""
        item = await self._inbox.get()
        if isinstance(item, BaseException):
            raise item
        return item


@contextlib.asynccontextmanager
async def udp_peer(host: str, port: int) -> AsyncIterator[UdpPeer]:
    """A ``UdpPeer`` connected to host:port (resolving the name may raise OSError)."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(UdpPeer, remote_addr=(host, port))
    try:
        yield peer
    finally:
        transport.close()


def describe_os_error(exc: BaseException) -> str:
    """'Connection refused' rather than asyncio's "Connect call failed ('127.0.0.1', 5060)"."""
    if isinstance(exc, ssl.SSLError):  # its errno is an OpenSSL code, not an OS one
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    return str(exc) or type(exc).__name__
