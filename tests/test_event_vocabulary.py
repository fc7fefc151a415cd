"""One event vocabulary: every upstream type maps every event, explicitly."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from ccwatch.incidents.vocabulary import EVENT_OF_CHANGE, Event
from ccwatch.tickets.adapters import IGNORE, UPSTREAMS
from ccwatch.tickets.adapters.base import UpstreamBase

SRC = Path(__file__).resolve().parent.parent / "src" / "ccwatch"


@pytest.mark.parametrize("name", sorted(UPSTREAMS))
def test_every_adapter_maps_every_event(name: str) -> None:
    adapter = UPSTREAMS[name].adapter
    events = getattr(adapter, "EVENTS", None)
    assert events is not None, f"{name}: the adapter has no EVENTS map"
    missing = set(Event) - set(events)
    assert not missing, f"{name} does not say what it does with {sorted(missing)}"
    assert all(isinstance(action, str) and action for action in events.values())


def test_the_adapter_by_event_table() -> None:
    """The table docs/architecture.md shows: printed so a reader sees it in the test log."""
    names = sorted(UPSTREAMS)
    rows = [f"{'event':<20}" + "".join(f"{n:<28}" for n in names)]
    for event in Event:
        rows.append(
            f"{event.value:<20}"
            + "".join(f"{UPSTREAMS[n].adapter.EVENTS[event]:<28}" for n in names)  # type: ignore[attr-defined]
        )
    print("\n".join(rows))
    # The one deliberate silence today: nothing fires or triggers after a resolution.
    assert UPSTREAMS["pagerduty"].adapter.EVENTS[Event.RCA_DUE] == IGNORE  # type: ignore[attr-defined]
    assert UPSTREAMS["alertmanager"].adapter.EVENTS[Event.RCA_DUE] == IGNORE  # type: ignore[attr-defined]


def test_each_upstream_type_is_one_module_registering_model_and_adapter() -> None:
    for name, upstream in UPSTREAMS.items():
        assert issubclass(upstream.model, UpstreamBase)
        module = inspect.getmodule(upstream.adapter)
        assert module is inspect.getmodule(upstream.model), name
        assert module is not None and module.__name__.endswith(f".{name}")
        assert upstream.model.model_fields["type"].annotation.__args__ == (name,)  # type: ignore[union-attr]


def test_lifecycle_changes_send_events_of_the_vocabulary() -> None:
    assert {event for event in EVENT_OF_CHANGE.values() if event is not None} <= set(Event)


def _writers_of(tables: tuple[str, ...]) -> set[str]:
    writers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.split()).upper()
                for table in tables:
                    for verb in (f"INSERT INTO {table} ", f"INSERT OR IGNORE INTO {table} ",
                                 f"UPDATE {table} ", f"DELETE FROM {table} "):  # fmt: skip
                        if verb.upper() in text + " ":
                            writers.add(str(path.relative_to(SRC)))
    return writers


def test_one_module_writes_the_incident_tables() -> None:
    """The one write path: only the repository (called by the incident service) writes
    incidents, their timeline and the outbox."""
    writers = _writers_of(("incidents", "incident_timeline", "outbox"))
    print("modules writing incidents/incident_timeline/outbox:", sorted(writers))
    assert writers == {"incidents/repository.py"}
