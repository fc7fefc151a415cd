"""The incident state machine: holds, one incident per component, nodata, telemetry lost."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

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


class Written(Lifecycle):
    """A lifecycle whose every proposed transition is written at once (the store never
    fails): what the incident service does when the disk is fine."""

    def observe(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().observe(*args, **kwargs))

    def tick(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().tick(*args, **kwargs))

    def acknowledge(self, *args: Any, **kwargs: Any) -> Transition | None:
        transition = super().acknowledge(*args, **kwargs)
        return self._written([transition])[0] if transition is not None else None

    def _written(self, transitions: list[Transition]) -> list[Transition]:
        for transition in transitions:
            self.commit(transition)
        return transitions


def machine(
    open_after: float = 30,
    resolve_after: float = 300,
    stale_after: float = 120,
    reopen_window: float = 1800,
    auto_close_after: float | None = 48 * 3600,
) -> Lifecycle:
    counter = itertools.count(1)
    return Written(
        "blr1",
        LifecycleSettings(
            open_after,
            resolve_after,
            stale_after,
            loss_refresh=10,
            reopen_window=reopen_window,
            auto_close_after=auto_close_after,
        ),
        new_id=lambda: f"inc{next(counter)}",
    )


def bare(open_after: float = 30, resolve_after: float = 300, stale_after: float = 120) -> Lifecycle:
    """A lifecycle that only proposes: the test decides what was written."""
    counter = itertools.count(1)
    return Lifecycle(
        "blr1",
        LifecycleSettings(open_after, resolve_after, stale_after, loss_refresh=10),
        new_id=lambda: f"inc{next(counter)}",
    )


def changes(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [
        (t.change, t.incident.component, t.incident.severity.label)
        for t in transitions
        if t.incident is not None
    ]


def significant(transitions: list[Transition]) -> list[Transition]:
    """Without the periodic loss-figure refreshes (they send no event)."""
    return [t for t in transitions if t.change != "loss"]


def acd_only(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.incident is not None and t.incident.component == "acd"]


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
    # The fault back within reopen_window reopens the same incident.
    back = lc.observe("acd", reading(MINOR), 800)[0]
    assert (back.change, back.incident.id, back.incident.state) == ("reopened", "inc1", "open")
    assert back.incident.resolved_at is None and back.incident.reopen_count == 1


def test_a_fault_after_the_reopen_window_is_a_new_incident() -> None:
    lc = machine(open_after=0, resolve_after=0, reopen_window=600)
    first = lc.observe("acd", reading(CRITICAL), 0)[0].incident
    assert significant(lc.observe("acd", reading(NONE), 10))[0].change == "resolved"
    later = lc.observe("acd", reading(MAJOR), 611)[0]
    assert (later.change, later.incident.id) == ("opened", "inc2")
    assert later.incident.id != first.id


def test_reopen_needs_the_holds_like_an_open_and_keeps_peaks() -> None:
    lc = machine(open_after=30, resolve_after=0, reopen_window=600)
    lc.observe("acd", reading(CRITICAL), 0)
    lc.observe("acd", reading(CRITICAL), 30)
    assert significant(lc.observe("acd", reading(NONE), 40))[0].change == "resolved"
    assert significant(lc.observe("acd", reading(MAJOR), 100)) == []  # not held yet
    [back] = significant(lc.observe("acd", reading(MAJOR), 130))
    assert (back.change, back.event, back.incident.id) == ("reopened", "reopen", "inc1")
    assert (back.incident.severity, back.incident.peak_severity) == (MAJOR, CRITICAL)
    assert back.updates == {"resolved_at": None} and back.data == {"reopen_count": 1}


def test_restore_remembers_a_recent_resolve_for_reopen() -> None:
    lc = machine(open_after=0, resolve_after=0, reopen_window=600)
    incident = lc.observe("acd", reading(CRITICAL), 1000)[0].incident
    resolved = significant(lc.observe("acd", reading(NONE), 1010))[0].incident
    assert incident is not None and resolved is not None
    again = machine(open_after=0, resolve_after=0, reopen_window=600)
    again.restore([resolved], now=1300, mono=50)  # a restart: a new monotonic clock
    back = again.observe("acd", reading(MAJOR), 1400, mono=150)[0]
    assert (back.change, back.incident.id) == ("reopened", incident.id)
    late = machine(open_after=0, resolve_after=0, reopen_window=600)
    late.restore([resolved], now=1700, mono=50)
    assert late.observe("acd", reading(MAJOR), 1710, mono=60)[0].change == "opened"


def test_an_incident_nodata_for_auto_close_after_expires() -> None:
    lc = machine(open_after=0, stale_after=120, auto_close_after=3600)
    incident = lc.observe("acd", reading(CRITICAL), 0)[0].incident
    [silent] = acd_only(lc.tick(120))  # (and "telemetry lost" for the site)
    assert (silent.change, silent.incident.nodata_since) == ("nodata", 120)
    assert silent.data == {"nodata_since": 120}
    assert acd_only(lc.tick(3719)) == []
    [expired] = acd_only(lc.tick(3720))
    assert (expired.change, expired.event, expired.incident.state) == (
        "expired",
        "expire",
        "expired",
    )
    assert expired.incident.id == incident.id
    assert [i.component for i in lc.active()] == ["telemetry"]
    # An expired incident is over: data later opens a new one (no reopen of an expired one).
    assert [t.change for t in acd_only(lc.observe("acd", reading(MAJOR), 3800))] == ["opened"]


def test_data_back_before_auto_close_keeps_the_incident() -> None:
    lc = machine(open_after=0, stale_after=120, auto_close_after=3600)
    lc.observe("acd", reading(CRITICAL), 0)
    lc.tick(120)
    [resumed] = acd_only(significant(lc.observe("acd", reading(CRITICAL), 3000)))
    assert (resumed.change, resumed.incident.nodata_since) == ("data resumed", None)
    assert acd_only(lc.tick(3000 + 119)) == []
    assert [t.change for t in acd_only(lc.tick(3000 + 120))] == ["nodata"]
    assert acd_only(lc.tick(3000 + 120 + 3599)) == []  # the wait starts again at the new silence


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
    lc.acknowledge(incident.id, 5, "asha")
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
    # Per component: the last resolved incident's id and when it resolved.
    resolved: dict[str, tuple[str, float]] = field(default_factory=dict)
    reopen_window: float = 0.0


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
    st.sampled_from([0, 400]),
    st.sampled_from([None, 900]),
)
def test_any_run_keeps_the_invariants(
    run: list[tuple[int, str, Severity]],
    open_after: int,
    resolve_after: int,
    stale_after: int,
    reopen_window: int,
    auto_close_after: int | None,
) -> None:
    lc = machine(open_after, resolve_after, stale_after, reopen_window, auto_close_after)
    history = History(reopen_window=reopen_window)
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
    if transition.change in ("opened", "reopened"):
        assert component not in history.active, "two open incidents for one component"
        recent = history.resolved.get(component)
        within = recent is not None and now - recent[1] <= history.reopen_window
        # Back within reopen_window of a resolve: the same incident, else a new one.
        assert transition.change == ("reopened" if within else "opened")
        if within:
            assert recent is not None and incident.id == recent[0]
        history.active[component] = incident.id
    else:
        assert history.active.get(component) == incident.id, "the id changed"
    if transition.change in ("opened", "reopened", "escalated"):
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
        history.resolved[component] = (incident.id, now)
    if transition.change == "expired":
        assert incident.nodata_since is not None
        del history.active[component]
        history.resolved.pop(component, None)
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


# --- proposals, failed writes and clocks --------------------------------------------


def test_a_transition_whose_write_failed_is_proposed_again_by_the_next_message() -> None:
    lc = bare(open_after=30)
    lc.observe("acd", reading(CRITICAL), 0)
    (opened,) = lc.observe("acd", reading(CRITICAL), 30)
    assert opened.change == "opened"
    lc.abandon(opened)  # the disk was full
    assert lc.incident_of("acd") is None
    (again,) = lc.observe("acd", reading(CRITICAL), 35)
    assert (again.change, again.incident is not None and again.incident.severity) == (
        "opened",
        CRITICAL,
    )
    lc.commit(again)
    assert lc.incident_of("acd") is not None
    assert lc.observe("acd", reading(CRITICAL), 40) == []


def test_nothing_more_is_proposed_for_a_component_while_its_change_is_being_written() -> None:
    lc = bare(open_after=0, stale_after=60)
    (opened,) = lc.observe("acd", reading(CRITICAL), 0)
    # The ticker runs while the open is being written: it must not open a second one.
    assert lc.tick(1) == []
    assert lc.observe("acd", reading(CRITICAL), 2) == []
    lc.commit(opened)
    assert lc.tick(3) == []
    assert [t.change for t in lc.tick(70)] == ["nodata", "opened"]  # and telemetry lost


def test_an_acknowledgement_waits_for_no_write_and_is_proposed_once() -> None:
    lc = machine(open_after=0)
    (opened,) = lc.observe("acd", reading(MAJOR), 0)
    acked = lc.acknowledge(opened.incident_id, 5, "asha")
    assert acked is not None and acked.updates["acknowledged_by"] == "asha"
    assert acked.incident is not None and acked.incident.state == "acknowledged"
    assert lc.acknowledge(opened.incident_id, 6, "ravi") is None  # already acknowledged


def test_a_backward_wall_clock_jump_does_not_delay_an_open() -> None:
    """Holds run on the monotonic clock: the wall clock going back an hour (NTP step,
    a VM restored) leaves a 30 s open_after at 30 s."""
    lc = machine(open_after=30)
    wall = 1_800_000_000.0
    lc.observe("acd", reading(CRITICAL), wall, mono=100.0)
    transitions = lc.observe("acd", reading(CRITICAL), wall - 3600 + 30, mono=130.0)
    assert changes(transitions) == [("opened", "acd", "critical")]
    incident = lc.incident_of("acd")
    assert incident is not None and incident.opened_at == wall - 3600 + 30  # shown as read


def test_a_forward_wall_clock_jump_does_not_fake_nodata() -> None:
    lc = machine(open_after=0, stale_after=120)
    wall = 1_800_000_000.0
    lc.observe("acd", reading(MAJOR), wall, mono=10.0)
    # An hour ahead on the wall clock, one second later in fact.
    assert lc.tick(wall + 3600, mono=11.0) == []
    incident = lc.incident_of("acd")
    assert incident is not None and incident.state == "open"
    assert [t.change for t in lc.tick(wall + 3600, mono=131.0)] == ["nodata", "opened"]


@settings(max_examples=200, deadline=None)
@given(failures=st.lists(st.booleans(), min_size=40, max_size=40))
def test_write_failures_delay_an_open_but_never_lose_or_double_it(failures: list[bool]) -> None:
    """Whatever writes fail, once one succeeds the incident is open, exactly once."""
    lc = bare(open_after=30)
    written: list[Transition] = []
    for step, fails in enumerate(failures):
        for transition in lc.observe("acd", reading(CRITICAL), step * 5.0):
            if fails:
                lc.abandon(transition)
            else:
                lc.commit(transition)
                written.append(transition)
    opens = [t for t in written if t.change == "opened"]
    could_open = any(not fails for fails in failures[6:])  # 30 s held from step 6 on
    assert len(opens) == (1 if could_open else 0)
    assert (lc.incident_of("acd") is not None) == could_open
