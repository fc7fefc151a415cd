"""Escalation beyond time, over a real state database and incident service on a fake clock:
the shipped seed-003 path records its steps (timeline + metric) and sends nothing until
targets are set; ``when:`` picks incidents by severity/component; the third recurrence
of a component's fault within 7 days goes to engineering at its open. And
``check-config`` warns about levels that tell nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from ccwatch.cli import cli
from ccwatch.compose import configure_incident_service, incident_settings
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.service import IncidentService
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets.service import SlaWatcher
from tests.test_escalation_watcher import outbox, timeline, watcher_for
from tests.test_tickets_support import FakeClock

SHIPPED = Path(__file__).resolve().parent.parent / "config.yaml"
MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()
MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")
CLEAN = Reading(Severity.NONE, 0.0, "no production loss")


def shipped_escalation() -> dict[str, Any]:
    section = yaml.safe_load(SHIPPED.read_text())["escalation"]
    assert isinstance(section, dict)
    return section


def config_with(escalation: dict[str, Any]) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "site_timezone": "UTC",
            "classification": {"open_after": "0s", "resolve_after": "60s"},
            "incidents": {"reopen_window": "10m"},
            "tickets": [
                {"type": "webhook", "url": "https://tickets.example/hook"},
                {"type": "webhook", "name": "engineering-hook", "url": "https://eng.example/h"},
            ],
            "escalation": escalation,
        }
    )


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def started(
    config: Config, store: StateStore, clock: FakeClock
) -> tuple[IncidentService, SlaWatcher, CollectorRegistry]:
    registry = CollectorRegistry()
    # The fake clock is the wall and the monotonic clock, so the lifecycle's holds follow it.
    service = IncidentService(
        store, incident_settings(config), registry, clock=clock, monotonic=clock
    )
    configure_incident_service(service, config)
    service.load_sync()
    return service, watcher_for(service, config, registry, clock), registry


def escalation_rows(store: StateStore) -> list[tuple[str, str, str]]:
    return [
        (row["upstream"], row["event"], row["body"]["escalation"]["name"])
        for row in outbox(store)
        if row["body"].get("escalation")
    ]


def test_shipped_default_path_records_steps_and_sends_nothing(store: StateStore) -> None:
    config = config_with(shipped_escalation())
    clock = FakeClock(MONDAY_10)
    service, watcher, registry = started(config, store, clock)

    async def scenario() -> str:
        await service.report(
            component="acd", kind="checklist", severity=Severity.CRITICAL, impact="23 of 100"
        )
        (incident,) = await service.list_incidents()
        iid = incident.id
        assert await watcher.evaluate(MONDAY_10 + 60 * MINUTE) == []
        assert await watcher.evaluate(MONDAY_10 + 91 * MINUTE) == [f"{iid}:Tier 1", f"{iid}:Tier 2"]
        assert await watcher.evaluate(MONDAY_10 + 6 * HOUR) == [f"{iid}:Engineering"]
        assert await watcher.evaluate(MONDAY_10 + 7 * HOUR) == []  # each once
        return iid

    iid = asyncio.run(scenario())
    steps = [detail for change, detail in timeline(store, iid) if change == "sla_escalation"]
    assert steps == [
        "escalated to Tier 1 (no targets configured): first response warning",
        "escalated to Tier 2 (no targets configured): first response breach",
        "escalated to Engineering (no targets configured): resolution breach",
    ]
    for level in ("Tier 1", "Tier 2", "Engineering"):
        assert registry.get_sample_value("ccwatch_sla_escalations_total", {"level": level}) == 1
    assert escalation_rows(store) == []  # nothing goes anywhere
    # The ticket itself still goes out (open, breaches, reminders): only the path is silent.
    events = {row["event"] for row in outbox(store)}
    assert "open" in events and not events & {"escalation_level", "sla_warning"}


def test_when_matches_severity_and_component_at_open(store: StateStore) -> None:
    config = config_with(
        {
            "levels": [
                {
                    "name": "Engineering (ACD critical)",
                    "when": {"severity": ["critical"], "component": ["acd"]},
                    "upstream": "engineering-hook",
                },
                {
                    "name": "Tier 2 (checklist faults)",
                    "trigger": "opened",
                    "when": {"kind": ["checklist"], "component": ["ivr", "dialer"]},
                    "upstream": "webhook",
                },
            ]
        }
    )
    clock = FakeClock(MONDAY_10)
    service, watcher, _ = started(config, store, clock)

    async def scenario() -> dict[str, list[str]]:
        sent: dict[str, list[str]] = {}
        for component, kind, severity in [
            ("acd", "retention", Severity.MAJOR),  # acd, but not critical
            ("ivr", "retention", Severity.CRITICAL),  # critical, neither acd nor checklist
            ("acd", "checklist", Severity.CRITICAL),  # level 1
            ("dialer", "checklist", Severity.MINOR),  # level 2
        ]:
            await service.report(component=component, kind=kind, severity=severity, impact="x")
            found = await service.store.run(
                lambda c: repository.find_active(c, "blr1", component, kind)  # noqa: B023
            )
            assert found is not None
            names = await watcher.evaluate(clock.now, only=[found.id])
            sent[f"{component}/{kind}"] = [name.split(":", 1)[1] for name in names]
            clock.now += MINUTE
        return sent

    assert asyncio.run(scenario()) == {
        "acd/retention": [],
        "ivr/retention": [],
        "acd/checklist": ["Engineering (ACD critical)"],
        "dialer/checklist": ["Tier 2 (checklist faults)"],
    }
    rows = escalation_rows(store)
    assert rows == [
        ("engineering-hook", "escalation_level", "Engineering (ACD critical)"),
        ("webhook", "escalation_level", "Tier 2 (checklist faults)"),
    ]
    first = next(r for r in outbox(store) if r["body"].get("escalation"))
    assert first["body"]["escalation"]["trigger"] == "opened"


def test_third_recurrence_in_seven_days_goes_to_engineering_at_open(store: StateStore) -> None:
    section = shipped_escalation()
    for level in section["levels"]:
        if level["name"] == "Engineering (recurring fault)":
            level["upstream"] = "engineering-hook"
    config = config_with(section)
    clock = FakeClock(MONDAY_10)
    service, watcher, registry = started(config, store, clock)
    recurring = "Engineering (recurring fault)"

    async def at(now: float, reading: Reading) -> None:
        clock.now = now
        await service.apply(service.observe("acd", reading, now))

    async def occurrence(start: float) -> tuple[str, list[str]]:
        """The fault at ``start``, the watcher at once, then over 2 minutes later."""
        await at(start, CRITICAL)
        (active,) = await service.list_incidents(state="active")
        names = await watcher.evaluate(start + 1)
        await at(start + 60, CLEAN)
        await at(start + 120, CLEAN)
        assert (await service.get(active.id)).state == "resolved"  # type: ignore[union-attr]
        return active.id, [name.split(":", 1)[1] for name in names]

    async def scenario() -> list[tuple[str, list[str]]]:
        t = MONDAY_10
        return [
            await occurrence(t),  # first: A
            await occurrence(t + 5 * MINUTE),  # back within reopen_window: A reopened (1)
            await occurrence(t + 1 * DAY),  # recurrence 2: B
            await occurrence(t + 3 * DAY),  # recurrence 3: C -> engineering at open
            await occurrence(t + 12 * DAY),  # 9 days after C: the window holds nothing
        ]

    (a, a_sent), (a_again, again_sent), (b, b_sent), (c, c_sent), (e, e_sent) = asyncio.run(
        scenario()
    )
    assert a == a_again and len({a, b, c, e}) == 4
    assert (a_sent, again_sent, b_sent, c_sent, e_sent) == ([], [], [], [recurring], [])
    assert escalation_rows(store) == [("engineering-hook", "escalation_level", recurring)]
    (row,) = [r for r in outbox(store) if r["body"].get("escalation")]
    opened = store.run_sync(lambda conn: repository.load_incident(conn, c))
    assert opened is not None
    triggered = datetime.fromisoformat(row["body"]["escalation"]["triggered_at"])
    assert triggered.timestamp() == opened.opened_at  # at its open
    assert registry.get_sample_value("ccwatch_sla_escalations_total", {"level": recurring}) == 1
    details = [d for change, d in timeline(store, c) if change == "sla_escalation"]
    assert details == [f"{recurring} (opened), notified: engineering-hook"]


def test_check_config_warns_about_levels_without_targets(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "site: blr1\n"
        "tickets: [{type: webhook, url: 'https://tickets.example/hook'}]\n"
        "escalation:\n"
        "  levels:\n"
        "    - {name: Tier 1, trigger: first_response_warning, upstream: webhook}\n"
        "    - {name: Tier 2, trigger: first_response_breach}\n"
        "    - {name: Engineering, when: {recurrence_count_at_least: 3}}\n"
    )
    result = CliRunner().invoke(cli, ["-c", str(path), "check-config"])
    assert result.exit_code == 0, result.output
    assert "OK, site blr1" in result.stdout
    assert result.stderr.splitlines() == [
        f"{path}: warning: escalation -> levels -> 2: no targets (email or upstream); "
        "the step is only recorded",
        f"{path}: warning: escalation -> levels -> 3: no targets (email or upstream); "
        "the step is only recorded",
    ]
    path.write_text(path.read_text().replace("  levels:", "  enabled: false\n  levels:"))
    quiet = CliRunner().invoke(cli, ["-c", str(path), "check-config"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
