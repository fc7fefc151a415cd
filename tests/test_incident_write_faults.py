"""The one write path under faults: a full disk delays an open, never loses it, and slow
diagnostics delay only their own ticket.

The disk-full case runs on a real 2 MB tmpfs (needs root and mount(2); skipped with the
reason elsewhere), with the real store, incident service, outbox dispatcher and webhook
adapter posting to a local HTTP receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import build_incident_service, open_state
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.model import Incident
from ccwatch.severity import Severity
from ccwatch.tickets.adapters.base import AdapterContext
from ccwatch.tickets.adapters.webhook import WebhookAdapter
from ccwatch.tickets.diagnostics import DiagnosticsLimits, HostProbe
from ccwatch.tickets.outbox import OutboxDispatcher
from ccwatch.tickets.service import DiagnosticsGatherer
from tests.test_tickets_support import Receiver

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver().start()
    yield peer
    peer.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def config_for(state: Path, url: str, **extra: Any) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "state": {"path": str(state)},
            "classification": {"open_after": "0s"},
            "tickets": [{"type": "webhook", "url": url}],
            **extra,
        }
    )


def fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_delays_the_open_and_loses_no_event(
    small_disk: Path, receiver: Receiver
) -> None:
    config = config_for(small_disk / "state.db", f"{receiver.url}/hook")
    store = open_state(config.state.path)
    registry = CollectorRegistry()
    service = build_incident_service(config, store, registry)
    service.diagnostics = None
    adapter = WebhookAdapter(config.tickets[0], AdapterContext("blr1"))  # type: ignore[arg-type]
    dispatcher = OutboxDispatcher(store, {adapter.name: adapter}, registry=registry)
    filler = fill(small_disk)

    async def scenario() -> None:
        for _ in range(3):  # every write fails: the disk is full
            await service.apply(service.observe("acd", CRITICAL, time.time()))
        assert registry.get_sample_value("ccwatch_incident_write_failures_total") >= 1
        assert store.run_sync(lambda c: repository.list_incidents(c)) == []
        filler.unlink()  # the operator frees space
        await service.apply(service.observe("acd", CRITICAL, time.time()))
        await dispatcher.drain_once(adapter.name)
        await adapter.aclose()

    try:
        asyncio.run(scenario())
        incidents = store.run_sync(lambda c: repository.list_incidents(c))
    finally:
        store.close()
    assert [(i.component, i.state, i.severity) for i in incidents] == [
        ("acd", "open", Severity.CRITICAL)
    ]
    events = [(r.json["event"], r.json["incident_id"]) for r in receiver.accepted]
    assert events == [("open", incidents[0].id)], "the open event must arrive, once"


def test_slow_diagnostics_hold_back_only_their_own_ticket(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Diagnostics are gathered after the commit: while one component's log read hangs
    (an NFS mount, a FIFO), ingest goes on and other incidents are written; the hung one's
    open goes out at its deadline without them."""
    # Two incidents of their own (not one site fault): each has its own open and diagnostics.
    config = config_for(
        tmp_path / "state.db",
        f"{receiver.url}/hook",
        classification={"open_after": "0s", "group_by": "dependencies"},
    )
    store = open_state(config.state.path)
    service = build_incident_service(config, store, CollectorRegistry())
    hang = threading.Event()
    gathered: list[str] = []

    def diagnostics(incident: Incident) -> dict[str, Any]:
        if incident.component == "acd":
            hang.wait(30)  # stuck until the test lets it go
        gathered.append(incident.component)
        return {"host": {"component": incident.component}}

    service.diagnostics = diagnostics
    service.diagnostics_timeout = 0.5

    async def scenario() -> None:
        await service.apply(service.observe("acd", CRITICAL, time.time()))
        # The acd log read hangs; ivr's incident is written all the same.
        await service.apply(service.observe("ivr", CRITICAL, time.time()))
        assert service.lifecycle.incident_of("ivr") is not None
        assert "acd" not in gathered
        await service.wait_background()

    try:
        asyncio.run(scenario())
        rows = store.run_sync(lambda c: repository.outbox_rows(c))
        bodies = {
            row["incident_id"]: json.loads(
                store.run_sync(
                    lambda c, i=row["id"]: c.execute(
                        "SELECT body FROM outbox WHERE id = ?", (i,)
                    ).fetchone()[0]
                )
            )
            for row in rows
        }
    finally:
        hang.set()
        store.close()
    by_component = {body["component"]: body for body in bodies.values()}
    assert by_component["ivr"]["diagnostics"]["host"] == {"component": "ivr"}
    assert by_component["acd"]["diagnostics"]["host"] == {}  # went without, at the deadline
    # Both released: due now, not at the hold time.
    assert all(row["next_attempt_at"] < row["created_at"] + 1.5 for row in rows)


def test_a_fifo_named_as_a_log_file_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "acd.log"
    os.mkfifo(fifo)  # nobody writes: a plain open() for reading would block for good
    gatherer = DiagnosticsGatherer(
        {"acd": SimpleNamespace(processes=[], log_files=[fifo])},
        HostProbe(processes=lambda: []),
        DiagnosticsLimits(),
    )
    incident = Incident(
        id="i1", site="blr1", component="acd", kind="production_loss",
        severity=Severity.MAJOR, peak_severity=Severity.MAJOR, state="open",
        production_loss=0.1, peak_loss=0.1, impact="x", opened_at=0.0, updated_at=0.0,
    )  # fmt: skip
    assert gatherer(incident)["log_excerpt"] == [f"(not reading {fifo}: not a regular file)"]


def test_bodies_are_stored_redacted(tmp_path: Path, receiver: Receiver) -> None:
    """The state database keeps no secret a log excerpt carried (it is a file on disk,
    backed up and copied around)."""
    log = tmp_path / "acd.log"
    log.write_text("10:01 acd: login failed password=Sup3rSecretPw for agent 17\n")
    config = config_for(
        tmp_path / "state.db",
        f"{receiver.url}/hook",
        components={"acd": {"seats": 100, "log_files": [str(log)]}},
    )
    store = open_state(config.state.path)
    service = build_incident_service(config, store, CollectorRegistry())

    async def scenario() -> None:
        await service.apply(service.observe("acd", CRITICAL, time.time()))
        await service.wait_background()

    try:
        asyncio.run(scenario())
        bodies = store.run_sync(lambda c: [r[0] for r in c.execute("SELECT body FROM outbox")])
    finally:
        store.close()
    (body,) = bodies
    assert "login failed password=" in body  # the excerpt is there...
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert b"Sup3rSecretPw" not in raw  # ...but not the password, anywhere in the files
