"""The lifecycle's side of the SLA holds, waiting on the customer and the calls counted
over an incident (pure, injected wall and monotonic clocks)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.incidents.lifecycle import (
    Lifecycle,
    LifecycleSettings,
    Reading,
    Transition,
)
from ccwatch.incidents.vocabulary import Event
from ccwatch.severity import Severity

CRITICAL = Reading(Severity.CRITICAL, 0.4, "40 of 100 agents cannot take calls (40.0%)")
CLEAN = Reading(Severity.NONE, 0.0, "no production loss")


class Written(Lifecycle):
    """Every proposed transition written at once, kept in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[Transition] = []

    def observe(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().observe(*args, **kwargs))

    def tick(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().tick(*args, **kwargs))

    def waiting(self, *args: Any, **kwargs: Any) -> Transition | None:
        transition = super().waiting(*args, **kwargs)
        if transition is not None:
            self._written([transition])
        return transition

    def _written(self, transitions: list[Transition]) -> list[Transition]:
        for transition in transitions:
            self.commit(transition)
        self.log.extend(transitions)
        return transitions


def machine(**overrides: Any) -> Written:
    counter = itertools.count(1)
    settings_ = {
        "open_after": 0,
        "resolve_after": 0,
        "stale_after": 60,
        "reopen_window": 0,
        "auto_close_after": None,
        "auto_close_after_waiting": 3600,
        "calls_window": 300,
        **overrides,
    }
    return Written("blr1", LifecycleSettings(**settings_), new_id=lambda: f"i{next(counter)}")


# --- nodata gaps are SLA holds, measured on the monotonic clock ----------------------


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["data", "silence"]),
            st.integers(1, 600),  # how long (monotonic seconds)
            st.integers(-7200, 7200),  # a wall-clock jump before it
        ),
        min_size=1,
        max_size=12,
    )
)
def test_each_nodata_gap_is_kept_with_its_monotonic_length(
    plan: list[tuple[str, int, int]],
) -> None:
    """Whatever the wall clock does, each finished gap's span is as long as the
    component really was silent (monotonic time from nodata to the next message)."""
    m = machine()
    mono, wall = 0.0, 1_795_000_000.0
    m.observe("acd", CRITICAL, wall, mono)
    silent_since: float | None = None
    expected: list[float] = []
    for kind, length, jump in plan:
        wall += jump
        if kind == "data":
            for _ in range(max(1, length // 10)):
                mono, wall = mono + 10, wall + 10
                m.observe("acd", CRITICAL, wall, mono)
                if silent_since is not None:
                    expected.append(mono - silent_since)
                    silent_since = None
        else:
            end = mono + length
            while mono < end:
                mono, wall = mono + 5, wall + 5
                for t in m.tick(wall, mono):
                    if t.change == "nodata":
                        silent_since = mono
    incident = m.incident_of("acd")
    assert incident is not None
    assert [round(b - a, 6) for a, b in incident.nodata_spans] == [round(e, 6) for e in expected]
    resumed = [t for t in m.log if t.change == "data resumed"]
    assert len(resumed) == len(expected)
    for t in resumed:
        assert t.data["nodata_since"] is None
        assert t.data["nodata_spans"] == [list(s) for s in t.incident.nodata_spans]  # type: ignore[union-attr]


def test_a_restart_while_silent_keeps_the_gap_from_the_stored_time() -> None:
    m = machine()
    m.observe("acd", CRITICAL, 1000.0, 0.0)
    m.tick(1100.0, 100.0)  # silent for 60 s+: nodata at wall 1100
    incident = m.incident_of("acd")
    assert incident is not None and incident.nodata_since == 1100.0
    again = machine()
    again.restore([incident], now=1400.0, mono=50.0)  # a new process: its own monotonic clock
    again.observe("acd", CRITICAL, 1500.0, 150.0)
    back = again.incident_of("acd")
    assert back is not None and back.state == "open"
    assert back.nodata_spans == ((1100.0, 1500.0),)


# --- waiting on the customer ------------------------------------------------------------


def test_waiting_on_the_customer_is_recorded_once_and_ends_as_a_span() -> None:
    m = machine()
    m.observe("acd", CRITICAL, 0.0)
    incident = m.incident_of("acd")
    assert incident is not None
    first = m.waiting(incident.id, True, 100.0, "rt:ticket 42")
    assert first is not None and first.event is Event.WAITING_ON_CUSTOMER
    assert first.change == "waiting_on_customer" and "rt:ticket 42" in first.detail
    assert first.data["waiting_since"] == 100.0
    assert m.waiting(incident.id, True, 150.0, "rt:ticket 42") is None  # the same again
    waiting = m.incident_of("acd")
    assert waiting is not None and waiting.state == "waiting_on_customer"
    # Acknowledged while waiting: still waiting on the customer.
    ack = m.acknowledge(incident.id, 160.0, "rt:vendor")
    assert ack is not None and ack.incident is not None
    assert ack.incident.state == "waiting_on_customer" and ack.incident.acknowledged
    m.commit(ack)
    assert m.acknowledge(incident.id, 170.0, "rt:vendor") is None  # a second ack: nothing
    replied = m.waiting(incident.id, False, 400.0, "rt:ticket 42")
    assert replied is not None and replied.event is Event.CUSTOMER_REPLIED
    assert replied.data["waiting_since"] is None and replied.data["waiting_spans"] == [
        [100.0, 400.0]
    ]
    after = m.incident_of("acd")
    assert after is not None and after.state == "acknowledged"
    assert m.waiting(incident.id, False, 500.0, "rt:ticket 42") is None


def test_silence_while_waiting_comes_back_to_waiting() -> None:
    m = machine()
    m.observe("acd", CRITICAL, 0.0)
    incident = m.incident_of("acd")
    assert incident is not None
    m.waiting(incident.id, True, 10.0, "zendesk:4711")
    m.tick(100.0)
    silent = m.incident_of("acd")
    assert silent is not None and silent.state == "nodata"
    m.observe("acd", CRITICAL, 200.0)
    back = m.incident_of("acd")
    assert back is not None and back.state == "waiting_on_customer"


def test_an_incident_still_waiting_after_auto_close_after_waiting_is_closed() -> None:
    m = machine(stale_after=10_000)
    m.observe("acd", CRITICAL, 0.0)
    incident = m.incident_of("acd")
    assert incident is not None
    m.waiting(incident.id, True, 100.0, "rt:ticket 42")
    assert not [t for t in m.tick(3699.0) if t.change == "expired"]
    (closed,) = [t for t in m.tick(3700.0) if t.change == "expired"]
    assert closed.event is Event.EXPIRE and closed.incident is not None
    assert closed.incident.state == "expired"
    assert closed.data == {"closed_at": 3700.0, "closed_reason": "waiting_on_customer"}
    assert closed.extras["closed"] == {"reason": "waiting_on_customer", "waited_s": 3600}
    assert "auto_close_after_waiting" in closed.detail
    assert m.find(incident.id) is None
    # The fault is still seen: a new incident opens (the waiting one's ticket was closed).
    m.observe("acd", CRITICAL, 3705.0)
    fresh = m.incident_of("acd")
    assert fresh is not None and fresh.id != incident.id


def test_auto_close_after_waiting_off_never_closes() -> None:
    m = machine(stale_after=10**9, auto_close_after_waiting=None)
    m.observe("acd", CRITICAL, 0.0)
    incident = m.incident_of("acd")
    assert incident is not None
    m.waiting(incident.id, True, 1.0, "jira:OPS-1")
    assert not [t for t in m.tick(10.0**7) if t.change == "expired"]


def test_a_resolve_while_waiting_ends_the_wait() -> None:
    m = machine()
    m.observe("acd", CRITICAL, 0.0)
    incident = m.incident_of("acd")
    assert incident is not None
    m.waiting(incident.id, True, 10.0, "freshdesk:7")
    m.observe("acd", CLEAN, 50.0)
    (resolved,) = [t for t in m.log if t.change == "resolved"]
    assert resolved.data == {"waiting_since": None, "waiting_spans": [[10.0, 50.0]]}


def test_waiting_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="auto_close_after_waiting"):
        LifecycleSettings(auto_close_after_waiting=0)


# --- calls rejected over the incident ---------------------------------------------------


def calls(rejected: int, offered: int) -> Reading:
    return Reading(
        Severity.CRITICAL,
        rejected / offered,
        f"{rejected} of {offered} calls rejected",
        {"calls_rejected": rejected, "calls_offered": offered},
    )


def test_calls_are_summed_once_per_window_and_the_worst_window_kept() -> None:
    """Messages every 10 s with the 5-minute window's counts: one window is added every
    300 s, so the windows summed do not overlap."""
    m = machine(stale_after=10_000)
    m.observe("dialer", calls(30, 100), 0.0)  # opens (not counted: no incident before it)
    for t in range(10, 1210, 10):
        rejected = 40 if t < 600 else 80
        m.observe("dialer", calls(rejected, 100), float(t))
    incident = m.incident_of("dialer")
    assert incident is not None and incident.calls is not None
    # Samples at 10, 310, 610, 910: 40 + 40 + 80 + 80.
    assert incident.calls == {
        "window_s": 300,
        "rejected": 240,
        "offered": 400,
        "windows": 4,
        "peak_rejected": 80,
        "peak_offered": 100,
    }
    m.observe("dialer", CLEAN, 1300.0)
    (resolved,) = [t for t in m.log if t.change == "resolved"]
    assert resolved.incident is not None and resolved.incident.calls == incident.calls


def test_calls_restart_with_a_new_incident() -> None:
    m = machine(stale_after=10_000)
    m.observe("dialer", calls(30, 100), 0.0)
    m.observe("dialer", calls(30, 100), 10.0)
    m.observe("dialer", CLEAN, 20.0)
    m.observe("dialer", calls(50, 100), 30.0)
    m.observe("dialer", calls(50, 100), 40.0)
    second = m.incident_of("dialer")
    assert second is not None and second.calls is not None
    assert second.calls["rejected"] == 50 and second.calls["windows"] == 1
