"""The escalation path: which steps are due, each exactly once, never after its clock stops."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import load_config, validate_data
from ccwatch.errors import ConfigError
from ccwatch.severity import Severity
from ccwatch.sla import (
    EscalationConfig,
    EscalationStep,
    IncidentFacts,
    IncidentTimes,
    SlaConfig,
    escalation_warnings,
    escalations_due,
)

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


def names(steps: Sequence[EscalationStep]) -> list[str]:
    return [step.name for step in steps]


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


# --- `when:` and `trigger: opened` --------------------------------------------------

BY_FACTS = validate_data(
    EscalationConfig,
    {
        "levels": [
            {"name": "ACD critical", "when": {"severity": ["critical"], "component": ["acd"]}},
            {"name": "checklist", "trigger": "opened", "when": {"kind": ["checklist"]}},
            {"name": "recurring", "when": {"recurrence_count_at_least": 3}},
            {
                "name": "late recurring",
                "trigger": "first_response_breach",
                "when": {"recurrence_count_at_least": 1},
                "email": ["eng@example.com"],
            },
        ]
    },
    "escalation",
)


def test_opened_levels_fire_at_the_open_when_their_properties_match() -> None:
    incident = IncidentTimes(Severity.CRITICAL, OPENED)
    acd = IncidentFacts("acd", "production_loss", recurrences=0)
    (step,) = escalations_due(SLA, BY_FACTS, incident, OPENED, facts=acd)
    assert (step.name, step.trigger, step.clock, step.due_at) == (
        "ACD critical",
        "opened",
        None,
        OPENED,
    )
    assert step.clock_due_at is None and step.as_dict()["clock_due_at"] is None
    assert not step.has_targets
    major = IncidentTimes(Severity.MAJOR, OPENED)
    assert names(escalations_due(SLA, BY_FACTS, major, OPENED, facts=acd)) == []
    ivr = IncidentFacts("ivr", "checklist", recurrences=3)
    assert names(escalations_due(SLA, BY_FACTS, incident, OPENED, facts=ivr)) == [
        "checklist",
        "recurring",
    ]


def test_conditions_on_facts_are_not_met_without_facts() -> None:
    incident = IncidentTimes(Severity.CRITICAL, OPENED)
    assert escalations_due(SLA, BY_FACTS, incident, OPENED + timedelta(days=1)) == []


def test_an_opened_level_does_not_fire_once_the_incident_is_over() -> None:
    over = IncidentTimes(Severity.CRITICAL, OPENED, resolved_at=OPENED + timedelta(minutes=5))
    facts = IncidentFacts("acd", "checklist", recurrences=5)
    assert escalations_due(SLA, BY_FACTS, over, OPENED + timedelta(minutes=6), facts=facts) == []


def test_when_also_filters_clock_triggers() -> None:
    incident = IncidentTimes(Severity.MINOR, OPENED)
    late = OPENED + timedelta(minutes=90)
    first = IncidentFacts("dialer", "production_loss", recurrences=0)
    again = IncidentFacts("dialer", "production_loss", recurrences=1)
    assert names(escalations_due(SLA, BY_FACTS, incident, late, facts=first)) == []
    assert names(escalations_due(SLA, BY_FACTS, incident, late, facts=again)) == ["late recurring"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(Severity)[1:]),
    st.sampled_from(["acd", "ivr", "dialer"]),
    st.sampled_from(["production_loss", "checklist", "retention"]),
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=0, max_value=10),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
)
def test_more_recurrences_never_send_less(
    severity: Severity, component: str, kind: str, one: int, two: int, elapsed: timedelta
) -> None:
    fewer, more = sorted((one, two))
    incident = IncidentTimes(severity, OPENED)
    now = OPENED + elapsed

    def due(recurrences: int) -> set[str]:
        facts = IncidentFacts(component, kind, recurrences)
        return set(names(escalations_due(SLA, BY_FACTS, incident, now, facts=facts)))

    assert due(fewer) <= due(more)
    assert ("recurring" in due(more)) == (more >= 3)
    assert ("ACD critical" in due(more)) == (severity is Severity.CRITICAL and component == "acd")


def test_levels_without_targets_are_valid_and_warned_about() -> None:
    assert escalation_warnings(BY_FACTS) == [
        f"escalation -> levels -> {n}: no targets (email or upstream); the step is only recorded"
        for n in (1, 2, 3)
    ]
    off = BY_FACTS.model_copy(update={"enabled": False})
    assert escalation_warnings(off) == []
    assert escalation_warnings(TIERS) == []
    assert BY_FACTS.counts_recurrences and not TIERS.counts_recurrences
