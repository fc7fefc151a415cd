"""The incident state machine: holds, one incident per component, nodata, telemetry lost."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.incidents.lifecycle import (
    TELEMETRY_LOST,
    Lifecycle,
    LifecycleSettings,
    Reading,
    Transition,
)
from ccwatch.severity import Severity

NONE, MINOR, MAJOR, CRITICAL = Severity.NONE, Severity.MINOR, Severity.MAJOR, Severity.CRITICAL
LOSS = {NONE: 0.0, MINOR: 0.01, MAJOR: 0.1, CRITICAL: 0.23}


def reading(severity: Severity) -> Reading:
    return Reading(severity, LOSS[severity], f"{severity.label} impact")


def machine(
    open_after: float = 30, resolve_after: float = 300, stale_after: float = 120
) -> Lifecycle:
    counter = itertools.count(1)
    return Lifecycle(
        "blr1",
        LifecycleSettings(open_after, resolve_after, stale_after, loss_refresh=10),
        new_id=lambda: f"inc{next(counter)}",
    )


def changes(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.change, t.incident.component, t.incident.severity.label) for t in transitions]


def significant(transitions: list[Transition]) -> list[Transition]:
    """Without the periodic loss-figure refreshes (they send no event)."""
    return [t for t in transitions if t.change != "loss"]


def test_a_severity_must_hold_for_open_after_before_an_incident_opens() -> None:
    lc = machine(open_after=30)
    assert lc.observe("acd", reading(CRITICAL), 0) == []
    assert lc.observe("acd", reading(CRITICAL), 29) == []
    assert changes(lc.observe("acd", reading(CRITICAL), 30)) == [("opened", "acd", "critical")]


def test_open_after_zero_opens_on_the_first_message() -> None:
    lc = machine(open_after=0)
    assert changes(lc.observe("acd", reading(MAJOR), 0)) == [("opened", "acd", "major")]


def test_a_blip_does_not_open_anything() -> None:
    lc = machine(open_after=30)
    lc.observe("acd", reading(CRITICAL), 0)
    lc.observe("acd", reading(NONE), 10)
    assert lc.observe("acd", reading(CRITICAL), 35) == []
    assert lc.tick(60) == []
    assert changes(lc.tick(65)) == [("opened", "acd", "critical")]


def test_flapping_between_major_and_critical_opens_major_then_escalates_once_critical_holds() -> (
    None
):
    lc = machine(open_after=30)
    for t, severity in [(0, CRITICAL), (10, MAJOR), (20, CRITICAL), (30, MAJOR)]:
        transitions = lc.observe("acd", reading(severity), t)
    assert changes(transitions) == [("opened", "acd", "major")]
    lc.observe("acd", reading(CRITICAL), 40)
    transitions = lc.observe("acd", reading(CRITICAL), 70)
    assert changes(transitions) == [("escalated", "acd", "critical")]
    assert transitions[0].incident.id == "inc1"


def test_escalation_and_de_escalation_keep_the_incident_id_and_resolve_waits() -> None:
    lc = machine(open_after=0, resolve_after=300)
    opened = lc.observe("acd", reading(MAJOR), 0)[0].incident
    escalated = lc.observe("acd", reading(CRITICAL), 10)[0]
    assert (escalated.change, escalated.incident.id) == ("escalated", opened.id)
    assert significant(lc.observe("acd", reading(MAJOR), 20)) == []
    assert significant(lc.observe("acd", reading(MAJOR), 319)) == []
    down = significant(lc.observe("acd", reading(MAJOR), 320))[0]
    assert (down.change, down.incident.severity, down.incident.id) == (
        "de-escalated",
        MAJOR,
        opened.id,
    )
    assert significant(lc.observe("acd", reading(NONE), 400)) == []
    resolved = significant(lc.observe("acd", reading(NONE), 700))[0]
    assert (resolved.change, resolved.incident.id, resolved.incident.state) == (
        "resolved",
        opened.id,
        "resolved",
    )
    assert resolved.incident.peak_severity == CRITICAL
    # The next problem is a new incident.
    assert lc.observe("acd", reading(MINOR), 800)[0].incident.id == "inc2"


def test_no_data_puts_the_incident_in_nodata_without_resolving_it() -> None:
    lc = machine(open_after=0, stale_after=120)
    incident = lc.observe("acd", reading(CRITICAL), 0)[0].incident
    assert lc.tick(119) == []
    nodata = lc.tick(120)
    assert next((t.change, t.incident.state, t.incident.id) for t in nodata) == (
        "nodata",
        "nodata",
        incident.id,
    )
    resumed = lc.observe("acd", reading(CRITICAL), 500)
    assert [(t.change, t.incident.state) for t in resumed if t.incident.id == incident.id] == [
        ("data resumed", "open")
    ]


def test_telemetry_lost_incident_when_every_component_is_silent() -> None:
    lc = machine(open_after=0, stale_after=120)
    lc.observe("acd", reading(NONE), 0)
    lc.observe("ivr", reading(NONE), 60)
    assert lc.tick(130) == []  # ivr still talks
    lost = lc.tick(180)
    assert [(t.change, t.incident.kind, t.incident.severity) for t in lost] == [
        ("opened", TELEMETRY_LOST, MINOR)
    ]
    back = lc.observe("ivr", reading(NONE), 200)
    assert [(t.change, t.incident.kind) for t in back] == [("resolved", TELEMETRY_LOST)]


def test_restored_incidents_continue_with_the_same_id() -> None:
    first = machine(open_after=0)
    incident = first.observe("acd", reading(CRITICAL), 0)[0].incident
    second = machine(open_after=0)
    second.restore([incident], now=1000)
    assert second.observe("acd", reading(CRITICAL), 1001) == []
    assert significant(second.observe("acd", reading(MAJOR), 1002)) == []
    # And without data after the restart it goes nodata, it is not forgotten (and as
    # it was the only component talking, the site's telemetry-lost incident opens).
    assert [(t.change, t.incident.kind) for t in second.tick(1002 + 120)] == [
        ("nodata", "production_loss"),
        ("opened", TELEMETRY_LOST),
    ]


def test_an_acknowledged_incident_returns_to_acknowledged_after_nodata() -> None:
    lc = machine(open_after=0)
    incident = lc.observe("acd", reading(CRITICAL), 0)[0].incident
    lc.acknowledge(incident.id, 5)
    lc.tick(200)
    resumed = lc.observe("acd", reading(CRITICAL), 300)
    assert [t.incident.state for t in resumed if t.change == "data resumed"] == ["acknowledged"]


def test_the_loss_figure_is_refreshed_at_most_every_loss_refresh() -> None:
    lc = machine(open_after=0)
    lc.observe("acd", Reading(CRITICAL, 0.23, "23"), 0)
    assert lc.observe("acd", Reading(CRITICAL, 0.25, "25"), 5) == []
    refresh = lc.observe("acd", Reading(CRITICAL, 0.26, "26"), 10)
    assert [(t.change, t.event, t.incident.production_loss) for t in refresh] == [
        ("loss", None, 0.26)
    ]


# --- properties of any run -------------------------------------------------------------

COMPONENTS = ("acd", "dialer")


@dataclass
class History:
    observations: dict[str, list[tuple[float, Severity]]] = field(
        default_factory=lambda: {c: [] for c in COMPONENTS}
    )
    active: dict[str, str] = field(default_factory=dict)


steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=200),  # seconds since the previous step
        st.sampled_from((*COMPONENTS, "tick")),
        st.sampled_from(list(Severity)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    steps,
    st.sampled_from([0, 30]),
    st.sampled_from([0, 60, 300]),
    st.sampled_from([120, 600]),
)
def test_any_run_keeps_the_invariants(
    run: list[tuple[int, str, Severity]], open_after: int, resolve_after: int, stale_after: int
) -> None:
    lc = machine(open_after, resolve_after, stale_after)
    history = History()
    now = 0.0
    for gap, target, severity in run:
        now += gap
        if target == "tick":
            transitions = lc.tick(now)
        else:
            history.observations[target].append((now, severity))
            transitions = lc.observe(target, reading(severity), now)
        for transition in transitions:
            check_transition(transition, history, open_after, resolve_after)
    # The lifecycle's own view agrees with what its transitions said.
    active = {i.component: i.id for i in lc.active() if i.kind != TELEMETRY_LOST}
    assert active == history.active


def check_transition(
    transition: Transition, history: History, open_after: float, resolve_after: float
) -> None:
    incident, now = transition.incident, transition.at
    if incident.kind == TELEMETRY_LOST:
        return
    component = incident.component
    seen = history.observations[component]
    if transition.change == "opened":
        assert component not in history.active, "two open incidents for one component"
        history.active[component] = incident.id
    else:
        assert history.active.get(component) == incident.id, "the id changed"
    if transition.change in ("opened", "escalated"):
        # The new severity (or more) held for open_after without a gap below it.
        start = now - open_after
        before = [s for t, s in seen if t <= start]
        since = [s for t, s in seen if t > start]
        assert before and before[-1] >= incident.severity
        assert all(s >= incident.severity for s in since)
    if transition.change == "resolved":
        # Clean data for resolve_after: a clean reading at or before now - resolve_after,
        # and nothing but clean readings since.
        start = now - resolve_after
        before = [s for t, s in seen if t <= start]
        since = [s for t, s in seen if t > start]
        assert before and before[-1] == NONE, "resolved without resolve_after of clean data"
        assert all(s == NONE for s in since)
        del history.active[component]
    if transition.change == "de-escalated":
        start = now - resolve_after
        assert all(s <= incident.severity for t, s in seen if t > start)


def test_a_recovering_incident_keeps_its_impact_until_and_after_it_resolves() -> None:
    lc = machine(open_after=0, resolve_after=60)
    lc.observe("acd", reading(CRITICAL), 0)
    refreshed = lc.observe("acd", reading(NONE), 30)
    assert [(t.change, t.incident.production_loss, t.incident.impact) for t in refreshed] == [
        ("loss", 0.0, "critical impact")
    ]
    [resolved] = significant(lc.observe("acd", reading(NONE), 90))
    assert (resolved.change, resolved.incident.impact) == ("resolved", "critical impact")
    assert resolved.detail == "recovered: none impact"


def test_a_de_escalated_incident_describes_its_new_level() -> None:
    lc = machine(open_after=0, resolve_after=60)
    lc.observe("acd", reading(CRITICAL), 0)
    lc.observe("acd", reading(MINOR), 10)
    [down] = significant(lc.observe("acd", reading(NONE), 75))
    # The last minute never went above minor, the latest reading is clean: the incident
    # is minor and says what the minor reading was.
    assert (down.change, down.incident.severity, down.incident.impact) == (
        "de-escalated",
        MINOR,
        "minor impact",
    )
