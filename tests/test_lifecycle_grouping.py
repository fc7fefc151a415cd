"""One ticket per fault: dependants' faults join their parent's incident (pure, injected clock)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import Config
from ccwatch.incidents.lifecycle import (
    PRODUCTION_LOSS,
    GroupBy,
    Lifecycle,
    LifecycleSettings,
    Reading,
    Transition,
)
from ccwatch.incidents.vocabulary import Event
from ccwatch.severity import Severity

NONE, MAJOR, CRITICAL = Severity.NONE, Severity.MAJOR, Severity.CRITICAL
DEPENDS = {"ivr": ("acd",), "dialer": ("acd",)}


def reading(component: str, severity: Severity) -> Reading:
    loss = {NONE: 0.0, MAJOR: 0.1, CRITICAL: 0.3}[severity]
    return Reading(severity, loss, f"{component} {severity.label} impact")


class Written(Lifecycle):
    """Every proposed transition written at once; the transitions are kept in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[Transition] = []

    def observe(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().observe(*args, **kwargs))

    def tick(self, *args: Any, **kwargs: Any) -> list[Transition]:
        return self._written(super().tick(*args, **kwargs))

    def _written(self, transitions: list[Transition]) -> list[Transition]:
        for transition in transitions:
            self.commit(transition)
        self.log.extend(transitions)
        return transitions


def machine(
    group_window: float = 120,
    depends_on: Any = None,
    group_by: GroupBy = "site",
    components: tuple[str, ...] = (),
) -> Written:
    counter = itertools.count(1)
    return Written(
        "blr1",
        LifecycleSettings(
            open_after=30,
            resolve_after=60,
            stale_after=600,
            reopen_window=0,
            depends_on=DEPENDS if depends_on is None else depends_on,
            group_window=group_window,
            group_by=group_by,
            components=components,
        ),
        new_id=lambda: f"i{next(counter)}",
    )


def run(m: Written, script: dict[float, dict[str, Severity]], until: float) -> None:
    """Every component publishes its latest severity every 5 s; ``script`` changes them."""
    current: dict[str, Severity] = {}
    for t in range(0, int(until) + 1, 5):
        current.update(script.get(float(t), {}))
        for component, severity in current.items():
            m.observe(component, reading(component, severity), float(t))
        m.tick(float(t))


def opens(m: Written) -> list[str]:
    return [t.incident.component for t in m.log if t.event is Event.OPEN and t.incident]


def test_dependants_failing_20s_after_the_parent_join_its_incident_one_open() -> None:
    m = machine()
    run(m, {0.0: {"acd": CRITICAL}, 20.0: {"ivr": CRITICAL, "dialer": CRITICAL}}, until=120)
    assert opens(m) == ["acd"]
    acd = m.incident_of("acd")
    assert acd is not None
    assert set(acd.affected) == {"ivr", "dialer"}
    assert acd.impact.endswith("; also affected: " + ", ".join(acd.affected))
    assert acd.impact.count("also affected") == 1
    attached = [t for t in m.log if t.change == "affected"]
    assert [t.event for t in attached] == [Event.UPDATE, Event.UPDATE]
    assert all(t.incident_id == acd.id for t in attached)
    assert attached[-1].data["affected_components"] == list(acd.affected)
    assert "ivr critical (depends on acd)" in " ".join(t.detail for t in attached)
    assert m.incident_of("ivr") is None and m.covering("ivr") == acd


def test_the_parent_impact_keeps_naming_the_dependants_when_it_changes() -> None:
    m = machine()
    run(
        m,
        {0.0: {"acd": MAJOR}, 10.0: {"ivr": CRITICAL}, 60.0: {"acd": CRITICAL}},
        until=150,
    )
    acd = m.incident_of("acd")
    assert acd is not None and acd.severity == CRITICAL
    assert acd.impact == "acd critical impact; also affected: ivr"


def test_a_dependant_failing_after_the_group_window_opens_its_own() -> None:
    m = machine(group_window=60)
    run(m, {0.0: {"acd": CRITICAL}, 70.0: {"ivr": CRITICAL}}, until=150)
    assert opens(m) == ["acd", "ivr"]
    acd = m.incident_of("acd")
    assert acd is not None and acd.affected == ()


def test_grouping_by_dependencies_leaves_a_component_without_dependencies_alone() -> None:
    m = machine(depends_on={"ivr": ("acd",)}, group_by="dependencies")
    run(m, {0.0: {"acd": CRITICAL}, 20.0: {"ivr": CRITICAL, "dialer": CRITICAL}}, until=120)
    assert sorted(opens(m)) == ["acd", "dialer"]


def test_the_parent_resolves_and_the_persisting_dependant_opens_on_its_own() -> None:
    m = machine()
    run(
        m,
        {
            0.0: {"acd": CRITICAL},
            20.0: {"ivr": CRITICAL, "dialer": CRITICAL},
            100.0: {"acd": NONE, "dialer": NONE},
        },
        until=300,
    )
    # acd recovered at 100 s and resolved after resolve_after (60 s); ivr still failing
    # opens its own then, dialer recovered with acd and opens nothing.
    assert opens(m) == ["acd", "ivr"]
    assert m.incident_of("acd") is None
    ivr = m.incident_of("ivr")
    assert ivr is not None and ivr.severity == CRITICAL
    resolved_at = next(t.at for t in m.log if t.change == "resolved")
    assert ivr.opened_at == resolved_at


def test_restore_keeps_the_dependants_attached() -> None:
    m = machine()
    run(m, {0.0: {"acd": CRITICAL}, 20.0: {"ivr": CRITICAL}}, until=90)
    acd = m.incident_of("acd")
    assert acd is not None and acd.affected == ("ivr",)
    again = machine()
    again.restore([acd], now=90.0)
    for t in range(95, 300, 5):
        again.observe("acd", reading("acd", CRITICAL), float(t))
        again.observe("ivr", reading("ivr", CRITICAL), float(t))
        again.tick(float(t))
    assert opens(again) == []


def test_a_dependant_of_a_dependant_joins_the_same_incident() -> None:
    m = machine(depends_on={"ivr": ("acd",), "dialer": ("ivr",)})
    run(m, {0.0: {"acd": CRITICAL}, 20.0: {"ivr": CRITICAL, "dialer": CRITICAL}}, until=120)
    assert opens(m) == ["acd"]
    acd = m.incident_of("acd")
    assert acd is not None and set(acd.affected) == {"ivr", "dialer"}


def test_group_window_and_depends_on_reach_the_lifecycle_from_config() -> None:
    from ccwatch.compose import lifecycle_settings

    config = Config.model_validate(
        {
            "site": "blr1",
            "components": {"ivr": {"depends_on": ["acd"]}},
            "classification": {"group_window": "45s"},
        }
    )
    built = lifecycle_settings(config)
    assert built.depends_on == {"ivr": ("acd",)}
    assert built.group_window == 45.0


@pytest.mark.parametrize(
    ("components", "message"),
    [
        ({"ivr": {"depends_on": ["acdd"]}}, "components -> ivr -> depends_on -> 1: unknown"),
        ({"ivr": {"depends_on": ["ivr"]}}, "cannot depend on itself"),
        (
            {"ivr": {"depends_on": ["dialer"]}, "dialer": {"depends_on": ["ivr"]}},
            "a dependency cycle (ivr -> dialer -> ivr)",
        ),
    ],
)
def test_config_rejects_unknown_self_and_cyclic_dependencies(
    components: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="depends_on") as error:
        Config.model_validate({"site": "blr1", "components": components})
    assert message in str(error.value)


COMPONENTS = ("acd", "ivr", "dialer")
steps = st.lists(
    st.tuples(st.sampled_from(COMPONENTS), st.sampled_from([NONE, MAJOR, CRITICAL])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, gaps=st.lists(st.sampled_from([1.0, 5.0, 20.0, 70.0]), min_size=40))
def test_any_run_never_has_a_dependant_both_attached_and_open_on_its_own(
    steps: list[tuple[str, Severity]], gaps: list[float]
) -> None:
    m = machine(group_window=60)
    now = 0.0
    for (component, severity), gap in zip(steps, gaps, strict=False):
        now += gap
        m.observe(component, reading(component, severity), now)
        m.tick(now)
        acd = m.incident_of("acd")
        for dependant in ("ivr", "dialer"):
            own = m.incident_of(dependant)
            if own is not None:
                assert m.covering(dependant) == own
            if acd is not None and dependant in acd.affected:
                assert own is None or own.opened_at < acd.opened_at
        if acd is not None:
            assert len(set(acd.affected)) == len(acd.affected)
            assert set(acd.affected) <= {"ivr", "dialer"}
        # An attachment only ever joins an incident opened at most group_window earlier.
        for t in m.log:
            if t.change == "affected":
                assert t.incident is not None and t.incident.kind == PRODUCTION_LOSS
                assert t.at - t.incident.opened_at <= 60
                assert t.event is Event.UPDATE
    # Never more than one open per component while the parent's incident covers it.
    opened = [t for t in m.log if t.event is Event.OPEN]
    assert len({t.incident_id for t in opened}) == len(opened)


# --- grouping by site (the default): independent components, one incident -----------

SITE = ("acd", "ivr", "dialer")


def test_independent_components_failing_within_the_window_join_the_first_incident() -> None:
    m = machine(depends_on={}, components=SITE)
    run(m, {0.0: {"acd": CRITICAL}, 10.0: {"ivr": CRITICAL}, 20.0: {"dialer": CRITICAL}}, 120)
    assert opens(m) == ["acd"]
    acd = m.incident_of("acd")
    assert acd is not None and acd.affected == ("ivr", "dialer")
    attached = [t for t in m.log if t.change == "affected"]
    assert [t.event for t in attached] == [Event.UPDATE, Event.UPDATE]
    assert "within group_window of acd's open" in attached[0].detail
    # The second attachment makes it site-wide: body, record and impact say so.
    assert [t.extras["site_wide"] for t in attached] == [False, True]
    assert attached[-1].data["site_wide"] is True
    assert acd.impact.endswith("also affected: ivr, dialer (site-wide: every component of the site)")
    assert "site-wide" in attached[-1].detail


def test_faults_whose_holds_end_in_the_same_tick_give_one_open() -> None:
    """All three fail at once and are only evaluated by the ticker: the first open is
    proposed, the others wait for it to be written and then join it."""
    m = machine(depends_on={}, components=SITE)
    for component in SITE:
        m.observe(component, reading(component, CRITICAL), 0.0)
    for t in range(5, 100, 5):
        m.tick(float(t))
    assert opens(m) == ["acd"]
    acd = m.incident_of("acd")
    assert acd is not None and set(acd.affected) == {"ivr", "dialer"}


def test_by_site_a_fault_after_the_window_opens_its_own() -> None:
    m = machine(depends_on={}, group_window=60)
    run(m, {0.0: {"acd": CRITICAL}, 70.0: {"ivr": CRITICAL}}, until=150)
    assert opens(m) == ["acd", "ivr"]


def test_by_site_the_attached_component_opens_its_own_when_the_first_resolves() -> None:
    m = machine(depends_on={}, components=SITE)
    run(
        m,
        {0.0: {"acd": CRITICAL}, 20.0: {"ivr": CRITICAL}, 100.0: {"acd": NONE}},
        until=300,
    )
    assert opens(m) == ["acd", "ivr"]
    ivr = m.incident_of("ivr")
    assert ivr is not None and ivr.opened_at == next(t.at for t in m.log if t.change == "resolved")


def test_a_parent_in_the_window_is_preferred_to_an_earlier_incident_of_the_site() -> None:
    m = machine(depends_on={"dialer": ("ivr",)}, components=SITE)
    # ivr opens on its own (acd's incident is older than the window), dialer joins ivr's.
    run(m, {0.0: {"acd": CRITICAL}, 130.0: {"ivr": CRITICAL}, 150.0: {"dialer": CRITICAL}}, 250)
    assert opens(m) == ["acd", "ivr"]
    ivr = m.incident_of("ivr")
    assert ivr is not None and ivr.affected == ("dialer",)


def test_group_by_reaches_the_lifecycle_from_config_and_defaults_to_site() -> None:
    from ccwatch.compose import lifecycle_settings

    built = lifecycle_settings(Config.model_validate({"site": "blr1"}))
    assert built.group_by == "site"
    assert set(built.components) == {"acd", "ivr", "dialer", "voice_logger", "reports"}
    chosen = Config.model_validate({"site": "blr1", "classification": {"group_by": "dependencies"}})
    assert lifecycle_settings(chosen).group_by == "dependencies"
    with pytest.raises(ValueError, match="group_by"):
        Config.model_validate({"site": "blr1", "classification": {"group_by": "rack"}})


@settings(max_examples=150, deadline=None)
@given(steps=steps, gaps=st.lists(st.sampled_from([1.0, 5.0, 20.0, 70.0]), min_size=40))
def test_by_site_no_incident_opens_while_another_opened_within_the_window(
    steps: list[tuple[str, Severity]], gaps: list[float]
) -> None:
    """Whatever the faults: an open never happens while another production-loss incident
    of the site opened at most group_window earlier is active, and a component is in at
    most one incident."""
    m = machine(depends_on={}, group_window=60, components=COMPONENTS)
    now = 0.0
    for (component, severity), gap in zip(steps, gaps, strict=False):
        now += gap
        before = {c: m.incident_of(c) for c in COMPONENTS}
        written = m.observe(component, reading(component, severity), now) + m.tick(now)
        ended: set[str] = set()
        for t in written:
            if t.incident is not None and t.incident.state in ("resolved", "expired"):
                ended.add(t.incident.id)
            if t.event is not Event.OPEN or t.incident is None:
                continue
            others = [
                i
                for c, i in before.items()
                if i is not None
                and i.id not in ended
                and c != t.incident.component
                and t.at - i.opened_at <= 60
            ]
            assert not others, (t.incident.component, others)
        for name in COMPONENTS:
            holders = [
                i
                for i in (m.incident_of(c) for c in COMPONENTS)
                if i is not None and (i.component == name or name in i.affected)
            ]
            assert len(holders) <= 1
