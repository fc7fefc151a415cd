"""The systemd notify protocol (sd_notify): READY, WATCHDOG, STOPPING, RELOADING, STATUS.

Talks to ``$NOTIFY_SOCKET`` directly (a datagram to a unix socket, abstract when the
name starts with ``@``). Every call is a no-op when the daemon is not run by systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, socket_path: str | None = None) -> None:
        self._address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._socket: socket.socket | None = None
        if self._address:
            if self._address.startswith("@"):
                self._address = "\0" + self._address[1:]
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *fields: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # systemd going away must never take the daemon down with it.
            logger.warning("cannot notify systemd at $NOTIFY_SOCKET: %s", exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", "STATUS=reloading configuration")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not self.enabled or not usec or not usec.isdigit():
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 2 / 1_000_000

    async def watchdog_loop(self) -> None:
        """Ping the watchdog while the event loop is alive; a hung loop gets us restarted."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
