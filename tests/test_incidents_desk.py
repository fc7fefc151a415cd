"""What a service desk (issue 12's poller) and an operator do to an incident through the
incident service, over a real state database on an injected clock: waiting on the
customer (the resolution clock holds; auto-close after 48 h), an acknowledgement by the
vendor, an upstream's status note, lifting an SLA exemption, the nodata gap not counted,
and the RCA draft's calls rejected over the whole incident."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from ccwatch.cli import cli
from ccwatch.compose import open_state
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Lifecycle, LifecycleSettings, Reading
from ccwatch.incidents.model import Incident
from ccwatch.incidents.repository import outbox_rows, write_transition
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets.service import load_rca_draft
from tests.conftest import free_port
from tests.test_process import (
    CRITICAL,
    HOUR,
    MINUTE,
    MONDAY_10,
    bodies,
    config,
    events,
    observe,
    setup,
    store,  # noqa: F401 - the fixture
)

ALWAYS = {"calendars": {"default": {"hours": "24x7"}}}


def timeline(store: StateStore, incident_id: str) -> list[tuple[str, str, str]]:  # noqa: F811
    entries = store.run_sync(lambda c: repository.load_timeline(c, incident_id))
    return [(e.change, e.state, e.detail) for e in entries]


def record(store: StateStore, incident_id: str) -> Incident:  # noqa: F811
    found = store.run_sync(lambda c: repository.load_incident(c, incident_id))
    assert found is not None
    return found


def test_waiting_on_the_customer_holds_resolution_and_closes_after_48h(
    store: StateStore,  # noqa: F811
) -> None:
    cfg = config(sla=ALWAYS, classification={"open_after": "0s", "stale_after": "100h"})
    service, watcher, clock = setup(store, cfg)

    async def scenario() -> str:
        await observe(service, clock, CRITICAL, MONDAY_10)
        iid = (await service.list_incidents())[0].id
        await watcher.evaluate()
        clock.now = MONDAY_10 + 30 * MINUTE
        first = await service.acknowledge(iid, by="rt:vendor")
        again = await service.acknowledge(iid, by="rt:someone-else")
        assert again.acknowledged_by == "rt:vendor" and again.seq == first.seq
        await service.note(iid, "upstream_status", detail="rt:ticket 42: status open -> stalled")
        clock.now = MONDAY_10 + HOUR
        waiting = await service.waiting_on_customer(iid, True, "rt:ticket 42")
        assert waiting.state == "waiting_on_customer"
        same = await service.waiting_on_customer(iid, True, "rt:ticket 42")
        assert same.seq == waiting.seq  # nothing recorded the second time
        await watcher.evaluate()
        assert record(store, iid).resolution_due is None  # held: no due time
        clock.now = MONDAY_10 + 3 * HOUR  # the customer answered after 2 h
        replied = await service.waiting_on_customer(iid, False, "rt:ticket 42")
        assert replied.state == "acknowledged"
        await watcher.evaluate()
        # 6 h target, 2 h of it held: due at 10:00 + 8 h.
        assert record(store, iid).resolution_due == MONDAY_10 + 8 * HOUR
        # Waiting again, and nobody answers for 48 h: the ticker closes it.
        clock.now = MONDAY_10 + 4 * HOUR
        await service.waiting_on_customer(iid, True, "rt:ticket 42")
        clock.now = MONDAY_10 + 4 * HOUR + 48 * HOUR - 1
        await service.tick()
        assert record(store, iid).state == "waiting_on_customer"
        clock.now += 1
        await service.tick()
        # A desk's late word on a closed incident changes nothing.
        late = await service.waiting_on_customer(iid, False, "rt:ticket 42")
        assert late.state == "expired"
        await watcher.evaluate()
        return iid

    iid = asyncio.run(scenario())
    incident = record(store, iid)
    assert incident.state == "expired" and incident.data["closed_reason"] == "waiting_on_customer"
    assert incident.data["waiting_spans"] == [[MONDAY_10 + HOUR, MONDAY_10 + 3 * HOUR]]
    assert [e for _, e in events(store)] == [
        "open",
        "acknowledge",
        "waiting_on_customer",
        "customer_replied",
        "waiting_on_customer",
        "expire",
    ]
    (expired,) = bodies(store, "expire")
    assert expired["closed"] == {"reason": "waiting_on_customer", "waited_s": 48 * 3600}
    (waiting, *_) = bodies(store, "waiting_on_customer")
    assert waiting["waiting"] == {"waiting": True, "source": "rt:ticket 42"}
    assert waiting["state"] == "waiting_on_customer" and waiting["sla"]["resolution_due"] is None
    changes = timeline(store, iid)
    assert ("acknowledged", "acknowledged", "by rt:vendor") in changes
    assert ("upstream_status", "acknowledged", "rt:ticket 42: status open -> stalled") in changes
    assert [c for c, _, _ in changes if c.startswith(("waiting", "customer"))] == [
        "waiting_on_customer",
        "customer_replied",
        "waiting_on_customer",
    ]
    assert changes[-1][0] == "expired" and "auto_close_after_waiting" in changes[-1][2]
    # No resolution breach while waiting (48 h > 6 h target): the held time is not counted.
    assert "sla_breach" not in [c for c, _, _ in changes] or all(
        "resolution" not in d for c, _, d in changes if c == "sla_breach"
    )


def test_waiting_on_an_unknown_incident_raises(store: StateStore) -> None:  # noqa: F811
    service, _, _ = setup(store, config())
    try:
        asyncio.run(service.waiting_on_customer("nope", True, "rt:ticket 1"))
    except repository.UnknownIncidentError:
        return
    raise AssertionError("an unknown incident must raise UnknownIncidentError")


def test_lifting_an_exemption_resumes_the_clocks_without_the_exempt_span(
    store: StateStore,  # noqa: F811
) -> None:
    service, watcher, clock = setup(store, config(sla=ALWAYS))

    async def scenario() -> str:
        await observe(service, clock, CRITICAL, MONDAY_10)
        iid = (await service.list_incidents())[0].id
        await watcher.evaluate()
        assert record(store, iid).resolution_due == MONDAY_10 + 6 * HOUR
        await service.exempt_sla(iid, "customer hardware", "ops", now=MONDAY_10 + HOUR)
        await watcher.evaluate(MONDAY_10 + HOUR)
        assert record(store, iid).resolution_due is None
        lifted = await service.lift_sla_exemption(
            iid, "ops", "it was our switch after all", now=MONDAY_10 + 4 * HOUR
        )
        assert lifted.data["sla_exempt_at"] is None and lifted.data["sla_exempt"] is None
        again = await service.lift_sla_exemption(iid, "ops", now=MONDAY_10 + 5 * HOUR)
        assert again.seq == lifted.seq  # not exempt any more: nothing to lift
        clock.now = MONDAY_10 + 5 * HOUR
        await watcher.evaluate()
        return iid

    iid = asyncio.run(scenario())
    incident = record(store, iid)
    # 3 h exempt, not counted: due 10:00 + 6 h + 3 h.
    assert incident.resolution_due == MONDAY_10 + 9 * HOUR
    assert incident.data["sla_exempt_spans"] == [[MONDAY_10 + HOUR, MONDAY_10 + 4 * HOUR]]
    sent = [e for _, e in events(store) if e != "reminder"]  # unacknowledged critical
    # First response (90 m + the 3 h held) was due at 14:30: breached at 15:00.
    assert sent == ["open", "sla_exempt", "sla_exempt_lifted", "sla_breach"]
    (breach,) = bodies(store, "sla_breach")
    assert breach["breach"] == {"clock": "first_response", "due": "2026-11-23T14:30:00Z"}
    (body,) = bodies(store, "sla_exempt_lifted")
    assert body["sla_exempt_lifted"]["reason"] == "it was our switch after all"
    assert body["sla"]["resolution_due"] == "2026-11-23T19:00:00Z"
    lifted = [d for c, _, d in timeline(store, iid) if c == "sla_exempt_lifted"]
    assert lifted == ["by ops: it was our switch after all (exempt for 10800s, not counted by "
                      "the SLA clocks)"]  # fmt: skip


def test_the_nodata_gap_is_not_counted_once_data_resumes(store: StateStore) -> None:  # noqa: F811
    cfg = config(sla=ALWAYS, incidents={"auto_close_after": "48h"})
    service, watcher, clock = setup(store, cfg)

    async def scenario() -> str:
        await observe(service, clock, CRITICAL, MONDAY_10)
        iid = (await service.list_incidents())[0].id
        clock.now = MONDAY_10 + 10 * MINUTE  # silent since 10:00, nodata after stale_after
        await service.tick()
        await watcher.evaluate()
        assert record(store, iid).resolution_due is None
        await observe(service, clock, CRITICAL, MONDAY_10 + 130 * MINUTE)  # back at 12:10
        await watcher.evaluate()
        return iid

    iid = asyncio.run(scenario())
    incident = record(store, iid)
    assert incident.data["nodata_spans"] == [[MONDAY_10 + 10 * MINUTE, MONDAY_10 + 130 * MINUTE]]
    assert incident.resolution_due == MONDAY_10 + 8 * HOUR  # 6 h + the 2 h gap
    resumed = [d for c, _, d in timeline(store, iid) if c == "data resumed"]
    assert resumed == ["silent for 7200s (not counted by the SLA clocks)"]


def calls_reading(rejected: int, offered: int) -> Reading:
    return Reading(
        Severity.CRITICAL,
        0.4,
        "40 of 100 agents cannot take calls (40.0%)",
        {"seats": 100, "calls_offered": offered, "calls_rejected": rejected},
    )


def test_the_rca_draft_counts_calls_rejected_over_the_whole_incident(
    store: StateStore,  # noqa: F811
) -> None:
    """A simulated critical incident: messages every 30 s for 30 minutes with the 5-minute
    window's calls; the draft sums one window per 5 minutes and names the worst."""
    cfg = config(classification={"open_after": "0s", "resolve_after": "0s", "window": "5m"})
    service, watcher, clock = setup(store, cfg)

    async def scenario() -> str:
        for step in range(61):
            at = MONDAY_10 + step * 30
            rejected = 60 if step < 30 else 120
            await observe(service, clock, calls_reading(rejected, 400), at)
        iid = (await service.list_incidents())[0].id
        await service.acknowledge(iid, by="rt:vendor", now=MONDAY_10 + 20 * MINUTE)
        clean = Reading(Severity.NONE, 0.0, "no production loss", {"seats": 100})
        await observe(service, clock, clean, MONDAY_10 + 31 * MINUTE)
        await watcher.evaluate()
        return iid

    iid = asyncio.run(scenario())
    found = store.run_sync(lambda c: load_rca_draft(c, cfg.sla, iid, clock.now))
    assert found is not None
    draft = found[1]
    print(draft)
    # Samples at 0:30, 5:30, ... 25:30 (6 windows): 60 x 3 + 120 x 3.
    assert (
        "- Calls rejected over the incident: about 540 of 2400 offered (estimated: the 5m 00s "
        "metrics window taken once per window while the incident was open, 6 window(s) summed"
    ) in draft
    assert "- Worst 5m 00s window: 120 of 400 calls rejected" in draft
    assert "### Not counted by the SLA clocks" in draft and "- nothing held" in draft
    assert "by rt:vendor" in draft


def test_exempt_lift_from_the_command_line_without_a_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "site": "blr1",
                "state": {"path": str(state)},
                "http": {"listen": f"127.0.0.1:{free_port()}"},
                "tickets": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
            }
        )
    )
    opened = open_state(state)
    lifecycle = Lifecycle("blr1", LifecycleSettings(open_after=0), new_id=lambda: "feedbeef0002")
    [first] = lifecycle.observe("acd", Reading(Severity.MAJOR, 0.05, "5 of 100"), 1_795_000_000)
    opened.run_sync(lambda conn: write_transition(conn, first, []))
    opened.close()

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["-c", str(config_file), *args])
        return result.exit_code, result.output

    code, out = run("incidents", "exempt", "feedbeef0002")
    assert code == 2 and "--reason" in out
    code, out = run(
        "incidents", "exempt", "feedbeef0002", "--reason", "customer PC", "--by", "ravi"
    )
    assert code == 0, out
    code, out = run("incidents", "exempt", "feedbeef0002", "--lift", "--by", "ravi")
    assert code == 0 and "back inside the SLA" in out, out
    code, out = run("incidents", "show", "feedbeef0002", "--format", "json")
    body: dict[str, Any] = json.loads(out)
    assert body["sla_exempt"] is None
    assert [e["change"] for e in body["timeline"]] == ["opened", "sla_exempt", "sla_exempt_lifted"]
    reopened = open_state(state)
    try:
        sent = reopened.run_sync(lambda c: [r["event"] for r in outbox_rows(c)])
    finally:
        reopened.close()
    assert sorted(sent) == ["sla_exempt", "sla_exempt_lifted"]
