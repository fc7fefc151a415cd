"""What each operator page shows, gathered once per request as plain values.

The same values answer the HTML page and its JSON twin (``views.py``). Every read of the
state database happens in one ``store.run`` call per page (one hop to the store's
thread); the rest comes from memory: the config, the readiness tracker, the loss
recorder's latest readings and the metrics registry (retention keeps no table: its last
runs are what its metrics say).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ccwatch import __version__, history
from ccwatch.checklists import history as checklist_history
from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident, TimelineEntry, rfc3339
from ccwatch.pages.charts import Chart, loss_chart
from ccwatch.runtime import Runtime
from ccwatch.severity import Severity
from ccwatch.state import Connection
from ccwatch.tickets import links
from ccwatch.tickets.links import TicketLink

DAY = 86400.0
PAGE_SIZE = 50
# The incident list filters severity, component and time in Python over the newest
# SCAN_LIMIT incidents of the chosen state (the repository filters by state only).
SCAN_LIMIT = 20_000
DEAD_LETTER_SCAN = 1000
CHART_MARKERS = ("opened", "escalated", "de-escalated", "acknowledged", "resolved")
INCIDENT_CHART_PAD = 600.0  # seconds of history drawn before and after an incident
INCIDENT_CHART_MAX = 8 * DAY


# --- formatting --------------------------------------------------------------------------


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float | None) -> str:
    """``42s``, ``5m 3s``, ``3h 2m``, ``2d 4h`` (the sign is the caller's)."""
    if seconds is None:
        return ""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def pct(loss: float | None) -> str:
    return "" if loss is None else f"{loss * 100:.1f}%"


# --- SLA clocks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clock:
    name: str
    due: float | None
    done_at: float | None  # when the clock's goal was met (ack, resolve), if it was
    state: str  # "running" | "met" | "breached" | "overdue" (ran out, goal still open)
    remaining: float | None  # seconds left (negative: overdue) while running

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "due": rfc3339(self.due),
            "done_at": rfc3339(self.done_at),
            "state": self.state,
            "remaining_seconds": None if self.remaining is None else round(self.remaining, 1),
        }


def _clock(name: str, due: float | None, done_at: float | None, now: float) -> Clock | None:
    if due is None:
        return None
    if done_at is not None:
        return Clock(name, due, done_at, "met" if done_at <= due else "breached", None)
    remaining = due - now
    return Clock(name, due, None, "running" if remaining >= 0 else "overdue", remaining)


def sla_clocks(incident: Incident, now: float) -> list[Clock]:
    clocks = [
        _clock("first response", incident.first_response_due, incident.acknowledged_at, now),
        _clock("resolution", incident.resolution_due, incident.resolved_at, now),
        # No "RCA delivered" is recorded yet: the RCA clock runs until it runs out.
        _clock("RCA", incident.rca_due, None, now),
    ]
    return [c for c in clocks if c is not None]


def next_due(incident: Incident, now: float) -> Clock | None:
    """The clock that runs out next among those still running (or already overdue)."""
    running = [
        c
        for c in sla_clocks(incident, now)
        if c.state in ("running", "overdue") and (c.name != "RCA" or incident.resolved_at)
    ]
    return min(running, key=lambda c: c.due or 0.0, default=None)


def _incident_row(incident: Incident, now: float) -> dict[str, Any]:
    due = next_due(incident, now)
    return {
        "id": incident.id,
        "short_id": incident.id[:8],
        "site": incident.site,
        "component": incident.component,
        "kind": incident.kind,
        "severity": incident.severity.label,
        "peak_severity": incident.peak_severity.label,
        "priority": incident.priority,
        "state": incident.state,
        "loss": incident.production_loss,
        "impact": incident.impact,
        "opened_at": incident.opened_at,
        "resolved_at": incident.resolved_at,
        "next_due": due,
    }


# --- the overview --------------------------------------------------------------------------


@dataclass
class _OverviewRows:
    active: list[Incident]
    history: dict[str, list[history.Point]]
    checklists: list[dict[str, Any]]
    upstreams: dict[str, tuple[int, float | None]]
    dead: Counter[str]
    dead_scanned: int


def _checklist_summary(conn: Connection, name: str) -> dict[str, Any]:
    run = checklist_history.last_run(conn, name)
    if run is None:
        return {"name": name, "run": None}
    recent = checklist_history.recent_runs(conn, name, limit=1)
    return {
        "name": name,
        "run": {
            "started_at": run.started_at,
            "duration_seconds": round(run.duration_seconds, 3),
            "trigger": recent[0]["trigger"] if recent else "",
            "counts": {status.value: count for status, count in run.counts.items()},
            "failed": run.failed,
            "results": [
                {
                    "id": r.id,
                    "type": r.type,
                    "status": r.status.value,
                    "value": r.value,
                    "threshold": r.threshold,
                    "hint": r.hint,
                    "detail": r.detail,
                }
                for r in run.ordered()
            ],
        },
    }


def checklist_names(runtime: Runtime) -> list[str]:
    """The checklists whose runs the pages show: the config's; with ``sites:`` each
    host's of the fleet (``<checklist>@<host>``, the hosts from the job leases)."""
    names = [c.name for c in runtime.config.checklists.definitions]
    manager = runtime.fleet
    if manager is None:
        return names
    from ccwatch.fleet.leases import HOST_JOB_PREFIX  # only with sites:

    snapshot = manager.snapshot
    hosts = sorted(
        row.site.removeprefix(HOST_JOB_PREFIX)
        for row in (snapshot.jobs if snapshot is not None else [])
        if row.site.startswith(HOST_JOB_PREFIX)
    )
    return [f"{name}@{host}" for host in hosts for name in names]


def retention_runs(runtime: Runtime) -> list[dict[str, Any]]:
    """Per configured database: what the retention metrics say (no table keeps runs).
    With ``sites:``: the runs this worker made while it held the ``fleet`` job lease."""
    registry = runtime.registry
    found = []
    fleet_labels = {"site": runtime.config.site} if runtime.fleet is not None else {}
    for database in runtime.config.retention.databases:
        labels = {**fleet_labels, "database": database.name}
        last_ok = registry.get_sample_value(
            "ccwatch_retention_last_success_timestamp_seconds", labels
        )
        outcomes = {
            outcome: int(
                registry.get_sample_value(
                    "ccwatch_retention_runs_total", {**labels, "outcome": outcome}
                )
                or 0
            )
            for outcome in ("ok", "cut_short", "failed")
        }
        found.append({"database": database.name, "last_success": last_ok, "runs": outcomes})
    return found


def _window_of(runtime: Runtime, component: str, now: float) -> dict[str, Any] | None:
    """The maintenance window ``component`` is in now (the tile's badge), or None."""
    window = runtime.maintenance.window_for(component, now)
    return None if window is None else window.as_dict()


def maintenance_page(runtime: Runtime, now: float) -> dict[str, Any]:
    """The ``/maintenance`` page's values: active, upcoming (7 days), recently ended."""
    listing = runtime.maintenance.listing(now)
    return {
        "now": now,
        **{name: [w.as_dict() for w in windows] for name, windows in listing.items()},
    }


async def sites_view(runtime: Runtime, now: float) -> dict[str, Any]:
    """``/api/sites`` and the overview's "Sites": every site with the worker that holds
    it, from the lease table (``sites:``); one site, this process, without it."""
    config = runtime.config
    manager = runtime.fleet
    if manager is None:
        counts = await runtime.store.run(repository.active_counts_by_site)
        return {
            "fleet": False,
            "worker": None,
            "workers": [],
            "jobs": [],
            "sites": [
                {
                    "site": config.site,
                    "holder": None,
                    "epoch": None,
                    "held_here": True,
                    "lease_expires_in_seconds": None,
                    "active_incidents": counts.get(config.site, 0),
                    "mqtt_connected": _gauge(runtime, "ccwatch_mqtt_connected", {}),
                }
            ],
        }
    from ccwatch.fleet import leases  # only with sites:

    def load(conn: Connection) -> tuple[leases.Snapshot, dict[str, int]]:
        return leases.snapshot(conn), repository.active_counts_by_site(conn)

    snapshot, counts = await runtime.store.run(load)
    here = manager.held()
    jobs_here = manager.held_jobs()
    jobs = [
        {
            "lease": row.site,
            "holder": row.holder if row.held_at(snapshot.now) else None,
            "epoch": row.epoch,
            "held_here": row.site in jobs_here and jobs_here[row.site].lost is None,
            "lease_expires_in_seconds": (
                round(row.expires_at - snapshot.now, 1) if row.held_at(snapshot.now) else None
            ),
        }
        for row in snapshot.jobs
    ]
    sites: list[dict[str, Any]] = []
    for row in snapshot.leases:
        held = row.held_at(snapshot.now)
        sites.append(
            {
                "site": row.site,
                "holder": row.holder if held else None,
                "epoch": row.epoch,
                "held_here": row.site in here and here[row.site].lost is None,
                "lease_expires_in_seconds": (
                    round(row.expires_at - snapshot.now, 1) if held else None
                ),
                "active_incidents": counts.get(row.site, 0),
                "mqtt_connected": (
                    _gauge(runtime, "ccwatch_mqtt_connected", {"site": row.site})
                    if row.site in here
                    else None
                ),
            }
        )
    workers = [
        {
            "worker": w.worker,
            "url": w.url,
            "live": w.live_at(snapshot.now),
            "this": w.worker == manager.worker,
            "seen_at": w.seen_at,
            "sites": sorted(s["site"] for s in sites if s["holder"] == w.worker),
        }
        for w in snapshot.workers
    ]
    return {
        "fleet": True,
        "worker": manager.worker,
        "workers": workers,
        "sites": sites,
        "jobs": jobs,
    }


def _gauge(runtime: Runtime, name: str, labels: dict[str, str]) -> bool | None:
    value = runtime.registry.get_sample_value(name, labels)
    return None if value is None else value == 1


class UnknownSiteError(LookupError):
    """``/?site=`` names no site of the fleet (answered 404)."""


def _fleet_sites(runtime: Runtime) -> set[str]:
    config = runtime.config
    known = set(config.sites.configured()) if config.sites is not None else set()
    snapshot = runtime.fleet.snapshot if runtime.fleet is not None else None
    if snapshot is not None:
        known.update(row.site for row in snapshot.leases)
    return known


async def overview(runtime: Runtime, now: float, site: str | None = None) -> dict[str, Any]:
    """The overview page's values (loss charts over the last 24 hours). With ``sites:``,
    ``site`` (``/?site=…``) shows that site's components (raises ``UnknownSiteError``)."""
    config = runtime.config
    start = float(history.minute_of(now - DAY) + 60)
    end = start + DAY
    upstream_names = [u.upstream_name for u in config.tickets if u.enabled]
    names_of_checklists = checklist_names(runtime)
    fleet = runtime.fleet is not None
    shown: str | None = None  # with sites: the site whose components are shown
    if fleet and site:
        if site not in _fleet_sites(runtime):
            raise UnknownSiteError(f"no site named {site[:80]!r} in this fleet")
        shown = site
    components = config.components
    if shown is not None:
        components = config.for_site(shown).components

    def load(conn: Connection) -> _OverviewRows:
        dead_rows = repository.outbox_rows(conn, status="dead", limit=DEAD_LETTER_SCAN)
        return _OverviewRows(
            # Several sites: the open incidents of every site, or of the site shown.
            active=repository.active_incidents(conn, site=shown if fleet else config.site),
            # Several sites: only the site shown has tiles (each site's own rows).
            history=(
                history.series(conn, start, end, site=shown)
                if not fleet or shown is not None
                else {}
            ),
            checklists=[_checklist_summary(conn, name) for name in names_of_checklists],
            upstreams={name: repository.outbox_depth(conn, name) for name in upstream_names},
            dead=Counter(str(row["upstream"]) for row in dead_rows),
            dead_scanned=len(dead_rows),
        )

    rows = await runtime.store.run(load)
    thresholds = config.classification.thresholds
    stale_after = config.classification.stale_after.total_seconds()
    recorder = runtime.recorder if shown is None else runtime.site_recorders.get(shown)
    latest = recorder.latest if recorder is not None else {}
    incident_of = {i.component: i for i in rows.active}
    tiles = []
    # Several sites: component tiles only for the site asked for (each site's live values
    # are its worker's; another worker's site shows its last recorded minute).
    for name in () if fleet and shown is None else components:
        reading = latest.get(name)
        age = None if reading is None else max(0.0, now - reading.sampled_at)
        severity = reading.severity if reading is not None else Severity.NONE
        points = rows.history.get(name, [])
        incident = incident_of.get(name)
        tile = {
            "component": name,
            "severity": severity.label,
            "loss": None if reading is None else reading.loss,
            "sample_age_seconds": None if age is None else round(age, 1),
            "nodata": age is None or age > stale_after,
            "incident": None if incident is None else incident.id,
            "incident_state": None if incident is None else incident.state,
            "maintenance": _window_of(runtime, name, now),
            "chart": loss_chart([(p.minute, p.loss) for p in points], start, end, thresholds),
        }
        if shown is not None:
            tile["site"] = shown
            tile["here"] = recorder is not None
            if recorder is None and points:
                # Processed by another worker: its last recorded minute.
                last = points[-1]
                tile.update(
                    severity=last.severity.label,
                    loss=last.loss,
                    nodata=now - (last.minute + 60) > stale_after,
                    minute=last.minute,
                )
        tiles.append(tile)
    # Components that only appear in incidents or history (renamed, removed from config).
    readiness = runtime.readiness.snapshot()
    upstreams = [
        {
            "name": name,
            "pending": depth,
            "oldest_pending_age_seconds": None if oldest is None else round(now - oldest, 1),
            "dead_letters": rows.dead.get(name, 0),
            "ready": readiness.get(f"upstream:{name}", {}).get("ready"),
            "detail": readiness.get(f"upstream:{name}", {}).get("detail", ""),
        }
        for name, (depth, oldest) in rows.upstreams.items()
    ]
    open_incidents = sorted(
        (_incident_row(i, now) for i in rows.active),
        key=lambda row: (-Severity[row["severity"].upper()], row["opened_at"]),
    )
    return {
        "site": config.site,
        "shown_site": shown,
        "now": now,
        "version": __version__,
        "uptime_seconds": round(now - runtime.started_at, 1),
        "thresholds": {
            "major_above": thresholds.major_above,
            "critical_at": thresholds.critical_at,
        },
        "stale_after_seconds": stale_after,
        "components": tiles,
        "incidents": open_incidents,
        "checklists": rows.checklists,
        "retention": retention_runs(runtime),
        "upstreams": upstreams,
        "dead_letters_capped": rows.dead_scanned >= DEAD_LETTER_SCAN,
        "daemon": readiness,
        "fleet": await sites_view(runtime, now) if fleet else None,
    }


# --- one incident --------------------------------------------------------------------------


@dataclass
class _IncidentRows:
    incident: Incident
    timeline: list[TimelineEntry]
    outbox: list[dict[str, Any]]
    body: dict[str, Any] | None
    points: list[history.Point] = field(default_factory=list)
    desk_tickets: list[TicketLink] = field(default_factory=list)


async def incident_page(runtime: Runtime, incident_id: str, now: float) -> dict[str, Any] | None:
    def load(conn: Connection) -> _IncidentRows | None:
        incident = repository.load_incident(conn, incident_id)
        if incident is None:
            return None
        start, end = _incident_span(incident, now)
        return _IncidentRows(
            incident,
            repository.load_timeline(conn, incident_id),
            repository.outbox_rows(conn, incident_id=incident_id, limit=1000),
            repository.open_event_body(conn, incident_id),
            history.series(
                conn,
                start,
                end,
                incident.component,
                # Several sites: the incident's site's rows (one site: every row is its).
                site=incident.site if runtime.config.sites is not None else None,
            ).get(incident.component, []),
            links.for_incident(conn, incident_id),
        )

    rows = await runtime.store.run(load)
    if rows is None:
        return None
    incident = rows.incident
    start, end = _incident_span(incident, now)
    markers = [
        (entry.at, entry.change, f"{entry.change} {when(entry.at)}")
        for entry in rows.timeline
        if entry.change in CHART_MARKERS and start <= entry.at <= end
    ]
    chart = loss_chart(
        [(p.minute, p.loss) for p in rows.points],
        start,
        end,
        runtime.config.classification.thresholds,
        markers,
    )
    tickets: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows.outbox, key=lambda r: int(r["id"])):
        tickets.setdefault(str(row["upstream"]), []).append(
            {
                "event": row["event"],
                "seq": row["seq"],
                "status": row["status"],
                "attempts": row["attempts"],
                "created_at": row["created_at"],
                "delivered_at": row["delivered_at"],
                "next_attempt_at": row["next_attempt_at"],
                "last_error": row["last_error"],
                "idempotency_key": row["idempotency_key"],
            }
        )
    diagnostics = (rows.body or {}).get("diagnostics")
    return {
        "incident": incident,
        "row": _incident_row(incident, now),
        "now": now,
        "timeline": rows.timeline,
        "clocks": sla_clocks(incident, now),
        "tickets": tickets,
        "desk_tickets": {
            t.upstream: {**t.as_json(), "url": _safe_url(t.url)} for t in rows.desk_tickets
        },
        "diagnostics": diagnostics if isinstance(diagnostics, dict) and diagnostics else None,
        "chart": chart,
        "rca_draft": draft if isinstance(draft := incident.data.get("rca_draft"), str) else None,
    }


def _safe_url(url: str | None) -> str | None:
    """A desk's ticket link, only if it is http(s) (it comes from the desk's answer)."""
    return url if url and url.lower().startswith(("https://", "http://")) else None


def _incident_span(incident: Incident, now: float) -> tuple[float, float]:
    end = (incident.resolved_at or now) + INCIDENT_CHART_PAD
    start = max(incident.opened_at - INCIDENT_CHART_PAD, end - INCIDENT_CHART_MAX)
    return float(history.minute_of(start)), float(history.minute_of(end) + 60)


def incident_json(page: Mapping[str, Any]) -> dict[str, Any]:
    incident: Incident = page["incident"]
    timeline: list[TimelineEntry] = page["timeline"]
    body = incident.to_api(timeline)
    body["sla_clocks"] = [c.to_api() for c in page["clocks"]]
    body["tickets"] = {
        upstream: [
            {
                **row,
                "created_at": rfc3339(row["created_at"]),
                "delivered_at": rfc3339(row["delivered_at"]),
                "next_attempt_at": rfc3339(row["next_attempt_at"]),
            }
            for row in rows
        ]
        for upstream, rows in page["tickets"].items()
    }
    body["desk_tickets"] = [
        {
            **t,
            "polled_at": rfc3339(t["polled_at"]),
            "first_response_at": rfc3339(t["first_response_at"]),
        }
        for t in page["desk_tickets"].values()
    ]
    body["diagnostics"] = page["diagnostics"]
    body["chart"] = page["chart"].to_api()
    body["rca_draft"] = page["rca_draft"]
    return body


# --- the incident list ---------------------------------------------------------------------


class FilterError(ValueError):
    """A filter of the incident list that cannot be used (answered 400)."""


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    severity: Severity | None = None
    component: str | None = None
    since: float | None = None
    until: float | None = None
    page: int = 1

    def query(self, page: int | None = None) -> dict[str, str]:
        """The filters as query parameters (for paging links)."""
        values = {
            "state": self.state or "",
            "severity": self.severity.label if self.severity is not None else "",
            "component": self.component or "",
            "since": _iso(self.since),
            "until": _iso(self.until),
            "page": str(page if page is not None else self.page),
        }
        return {key: value for key, value in values.items() if value and value != "1"}


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M")


def _parse_time(name: str, value: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{name}: not a date or time ({value[:40]!r}); e.g. 2026-11-23T10:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_filters(query: Mapping[str, str]) -> Filters:
    state = query.get("state", "").strip() or None
    if state is not None and state not in (*repository.STATES, repository.ACTIVE):
        raise FilterError(
            f"state: unknown {state[:40]!r}; use one of "
            + ", ".join((*repository.STATES, repository.ACTIVE))
        )
    severity_text = query.get("severity", "").strip()
    try:
        severity = Severity.parse(severity_text) if severity_text else None
    except ValueError as exc:
        raise FilterError(f"severity: {exc}") from None
    try:
        page = int(query.get("page", "1") or "1")
    except ValueError:
        raise FilterError("page: must be a number") from None
    return Filters(
        state=state,
        severity=severity,
        component=query.get("component", "").strip() or None,
        since=_parse_time("since", query.get("since", "")),
        until=_parse_time("until", query.get("until", "")),
        page=max(1, page),
    )


def _matches(incident: Incident, filters: Filters) -> bool:
    return (
        (filters.severity is None or incident.peak_severity == filters.severity)
        and (filters.component is None or incident.component == filters.component)
        and (filters.since is None or incident.opened_at >= filters.since)
        and (filters.until is None or incident.opened_at < filters.until)
    )


async def incident_list(
    runtime: Runtime, filters: Filters, now: float, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    def load(conn: Connection) -> list[Incident]:
        return repository.list_incidents(conn, state=filters.state, limit=SCAN_LIMIT)

    scanned = await runtime.store.run(load)
    matching = [i for i in scanned if _matches(i, filters)]
    pages = max(1, -(-len(matching) // page_size))
    page = min(filters.page, pages)
    shown = matching[(page - 1) * page_size : page * page_size]
    return {
        "filters": filters,
        "total": len(matching),
        "scan_capped": len(scanned) >= SCAN_LIMIT,
        "page": page,
        "pages": pages,
        "page_size": page_size,
        "incidents": [_incident_row(i, now) for i in shown],
        "components": sorted({*runtime.config.components, *(i.component for i in scanned)}),
        "now": now,
    }


# --- checklists ----------------------------------------------------------------------------


async def checklists_page(runtime: Runtime, recent: int = 10) -> dict[str, Any]:
    names = checklist_names(runtime)

    def load(conn: Connection) -> list[dict[str, Any]]:
        found = []
        for name in names:
            summary = _checklist_summary(conn, name)
            summary["recent"] = checklist_history.recent_runs(conn, name, limit=recent)
            found.append(summary)
        return found

    return {"checklists": await runtime.store.run(load)}


# --- JSON ----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Page values → JSON values: times stay epoch seconds, charts and clocks summarised."""
    if isinstance(value, Chart | Clock):
        return value.to_api()
    if isinstance(value, Filters):
        return value.query()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [jsonable(v) for v in value]
    return value
