"""The escalation path: which steps are due, each exactly once, never after its clock stops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import load_config, validate_data
from ccwatch.errors import ConfigError
from ccwatch.severity import Severity
from ccwatch.sla import EscalationConfig, IncidentTimes, SlaConfig, escalations_due

OPENED = datetime(2026, 11, 23, 10, tzinfo=UTC)  # Monday
SLA = SlaConfig()  # seed 004: first response 90 min, critical resolution 6 h (24x5)

# Seed 003's tiers with seed 004's clocks; seed 001's CSM -> COO -> CEO would read alike.
TIERS = validate_data(
    EscalationConfig,
    {
        "levels": [
            {
                "name": "L1 support",
                "trigger": "first_response_warning",
                "warn_at": 0.75,
                "email": ["l1@example.com"],
            },
            {"name": "L2 support", "trigger": "first_response_breach", "upstream": "pagerduty"},
            {
                "name": "engineering",
                "trigger": "resolution_breach",
                "severities": ["critical", "major"],
                "email": ["eng@example.com"],
                "upstream": "webhook",
            },
            {
                "name": "CEO",
                "trigger": "resolution_breach",
                "after": "2h",
                "severities": ["critical"],
                "email": ["ceo@example.com"],
            },
        ]
    },
    "escalation",
)


def names(steps: list[object]) -> list[str]:
    return [step.name for step in steps]  # type: ignore[attr-defined]


def test_levels_fire_in_order_as_time_passes() -> None:
    incident = IncidentTimes(Severity.CRITICAL, OPENED)

    def due(minutes: float, sent: list[str]) -> list[str]:
        now = OPENED + timedelta(minutes=minutes)
        return names(escalations_due(SLA, TIERS, incident, now, sent))

    assert due(60, []) == []
    assert due(67.5, []) == ["L1 support"]  # 75 % of 90 min
    assert due(90, ["L1 support"]) == ["L2 support"]
    assert due(359, ["L1 support", "L2 support"]) == []
    assert due(360, ["L1 support", "L2 support"]) == ["engineering"]
    assert due(480, ["L1 support", "L2 support", "engineering"]) == ["CEO"]
    # Nothing is sent twice, and a restart that forgot nothing sends nothing new.
    assert due(10_000, ["L1 support", "L2 support", "engineering", "CEO"]) == []


def test_a_step_carries_its_targets_and_exact_trigger_time() -> None:
    incident = IncidentTimes(Severity.CRITICAL, OPENED)
    (step,) = escalations_due(SLA, TIERS, incident, OPENED + timedelta(minutes=70))
    assert step.email == ("l1@example.com",)
    assert step.due_at == OPENED + timedelta(minutes=67, seconds=30)
    assert step.clock_due_at == OPENED + timedelta(minutes=90)
    assert step.as_dict()["trigger"] == "first_response_warning"


def test_acknowledgement_stops_first_response_escalation() -> None:
    acked = IncidentTimes(Severity.CRITICAL, OPENED, acknowledged_at=OPENED + timedelta(minutes=10))
    steps = escalations_due(SLA, TIERS, acked, OPENED + timedelta(hours=5))
    assert steps == []


def test_minor_incidents_skip_levels_not_routed_to_them() -> None:
    minor = IncidentTimes(Severity.MINOR, OPENED)
    steps = escalations_due(SLA, TIERS, minor, OPENED + timedelta(days=30))
    assert names(steps) == ["L1 support", "L2 support"]  # minor has no resolution SLA


def test_business_calendar_holds_escalation_over_the_weekend() -> None:
    friday_night = datetime(2026, 11, 20, 23, tzinfo=UTC)
    incident = IncidentTimes(Severity.CRITICAL, friday_night)
    sunday = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert names(escalations_due(SLA, TIERS, incident, sunday)) == []


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(Severity)[1:]),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
)
def test_steps_already_due_stay_due_and_sending_them_empties_the_list(
    severity: Severity, first: timedelta, second: timedelta
) -> None:
    incident = IncidentTimes(severity, OPENED)
    earlier, later = sorted((first, second))
    early = escalations_due(SLA, TIERS, incident, OPENED + earlier)
    late = escalations_due(SLA, TIERS, incident, OPENED + later)
    assert set(names(early)) <= set(names(late))
    assert all(step.due_at <= OPENED + later for step in late)
    assert escalations_due(SLA, TIERS, incident, OPENED + later, names(late)) == []


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ([{"name": "L1", "email": ["a@b"]}], "needs a `trigger:` (or a `when:`"),
        (
            [{"name": "L1", "trigger": "opened", "after": "5m", "email": ["a@b"]}],
            "`after` applies to *_breach triggers only",
        ),
        ([{"name": "L1", "when": {"severity": []}}], "`severity:` lists nothing"),
        ([{"name": "L1", "when": {"recurrence_count_at_least": 0}}], "levels -> 1 -> when"),
        ([{"name": "L1", "trigger": "ack_breach", "email": ["a@b"]}], "levels -> 1 -> trigger"),
        (
            [
                {"name": "L1", "trigger": "first_response_breach", "email": ["a@b"]},
                {"name": "L1", "trigger": "resolution_breach", "email": ["a@b"]},
            ],
            "L1 repeats",
        ),
    ],
)
def test_bad_escalation_config_is_explained(levels: list[object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_data(EscalationConfig, {"levels": levels}, "escalation")
    assert message in "\n".join(caught.value.problems)


def test_escalation_targets_are_checked_against_tickets_and_email(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "site: blr1\n"
        "tickets: [{type: webhook, url: 'https://tickets.example/hook'}]\n"
        "escalation:\n"
        "  levels:\n"
        "    - {name: L2, trigger: first_response_breach, upstream: pagerduty}\n"
        "    - {name: COO, trigger: resolution_breach, email: [coo@example.com]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert "escalation -> levels -> 1 -> upstream: no enabled upstream named 'pagerduty'" in text
    assert "escalation -> levels -> 2 -> email: mailing needs the top-level `email:`" in text
