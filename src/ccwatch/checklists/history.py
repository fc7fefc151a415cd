"""Checklist run history in the state database (this module owns its two tables)."""

from __future__ import annotations

import json

from ccwatch.checklists.result import ChecklistRun, CheckResult, Status
from ccwatch.state import Connection, Migrations, PerDialect

KEEP_SECONDS = 90 * 86400

MIGRATIONS = Migrations(
    "checklists",
    {
        1: """
    CREATE TABLE checklist_runs (
        id               INTEGER PRIMARY KEY,
        checklist        TEXT NOT NULL,
        started_at       REAL NOT NULL,
        duration_seconds REAL NOT NULL,
        trigger          TEXT NOT NULL,
        counts           TEXT NOT NULL,
        emailed          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX checklist_runs_by_checklist ON checklist_runs (checklist, started_at);

    CREATE TABLE checklist_results (
        run_id           INTEGER NOT NULL REFERENCES checklist_runs (id) ON DELETE CASCADE,
        check_id         TEXT NOT NULL,
        type             TEXT NOT NULL,
        status           TEXT NOT NULL,
        value            TEXT NOT NULL DEFAULT '',
        threshold        TEXT NOT NULL DEFAULT '',
        hint             TEXT NOT NULL DEFAULT '',
        detail           TEXT NOT NULL DEFAULT '',
        duration_seconds REAL NOT NULL,
        PRIMARY KEY (run_id, check_id)
    );
    """,
        # The checklist file's order of the results, kept explicitly (it was SQLite's
        # rowid, which PostgreSQL does not have).
        2: PerDialect(
            sqlite="""
    ALTER TABLE checklist_results ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    UPDATE checklist_results SET position = rowid;
    """,
            postgresql="""
    ALTER TABLE checklist_results ADD COLUMN position BIGINT NOT NULL DEFAULT 0;
    """,
        ),
    },
)


def save_run(connection: Connection, run: ChecklistRun, trigger: str, emailed: bool) -> int:
    """Store one run with its results; runs older than 90 days are dropped. Returns its id."""
    from ccwatch.state import transaction

    counts = {status.value: count for status, count in run.counts.items()}
    with transaction(connection):
        cursor = connection.execute(
            "INSERT INTO checklist_runs (checklist, started_at, duration_seconds, trigger, "
            "counts, emailed) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (
                run.checklist,
                run.started_at,
                run.duration_seconds,
                trigger,
                json.dumps(counts),
                int(emailed),
            ),
        )
        run_id = int(cursor.fetchall()[0][0])
        connection.executemany(
            "INSERT INTO checklist_results (run_id, check_id, type, status, value, threshold, "
            "hint, detail, duration_seconds, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    r.id,
                    r.type,
                    r.status.value,
                    r.value,
                    r.threshold,
                    r.hint,
                    r.detail,
                    r.duration_seconds,
                    position,
                )
                for position, r in enumerate(run.results, start=1)
            ],
        )
        old = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM checklist_runs WHERE started_at < ?",
                (run.started_at - KEEP_SECONDS,),
            )
        ]
        if old:
            marks = ",".join("?" * len(old))
            connection.execute(f"DELETE FROM checklist_results WHERE run_id IN ({marks})", old)
            connection.execute(f"DELETE FROM checklist_runs WHERE id IN ({marks})", old)
    return run_id


def recent_runs(
    connection: Connection, checklist: str, limit: int = 10
) -> list[dict[str, object]]:
    """The latest runs of a checklist, newest first, with their status counts."""
    rows = connection.execute(
        "SELECT id, started_at, duration_seconds, trigger, counts, emailed FROM checklist_runs "
        "WHERE checklist = ? ORDER BY started_at DESC, id DESC LIMIT ?",
        (checklist, limit),
    ).fetchall()
    return [
        {
            "id": row["id"],
            "started_at": row["started_at"],
            "duration_seconds": row["duration_seconds"],
            "trigger": row["trigger"],
            "counts": json.loads(row["counts"]),
            "emailed": bool(row["emailed"]),
        }
        for row in rows
    ]


def last_run(connection: Connection, checklist: str) -> ChecklistRun | None:
    """The newest stored run of a checklist with its results (metrics after a restart)."""
    row = connection.execute(
        "SELECT id, started_at, duration_seconds FROM checklist_runs WHERE checklist = ? "
        "ORDER BY started_at DESC, id DESC LIMIT 1",
        (checklist,),
    ).fetchone()
    if row is None:
        return None
    results = [
        CheckResult(
            id=r["check_id"],
            type=r["type"],
            description="",
            status=Status(r["status"]),
            value=r["value"],
            threshold=r["threshold"],
            hint=r["hint"],
            detail=r["detail"],
            duration_seconds=r["duration_seconds"],
        )
        for r in connection.execute(
            "SELECT * FROM checklist_results WHERE run_id = ? ORDER BY position", (row["id"],)
        )
    ]
    return ChecklistRun(checklist, "", row["started_at"], row["duration_seconds"], results)
