"""Checklist run history in the state database (tables of schema version 2)."""

from __future__ import annotations

import json
import sqlite3

from ccwatch.checklists.result import ChecklistRun, CheckResult, Status

KEEP_SECONDS = 90 * 86400


def save_run(connection: sqlite3.Connection, run: ChecklistRun, trigger: str, emailed: bool) -> int:
    """Store one run with its results; runs older than 90 days are dropped. Returns its id."""
    from ccwatch.incidents.store import transaction

    counts = {status.value: count for status, count in run.counts.items()}
    with transaction(connection):
        cursor = connection.execute(
            "INSERT INTO checklist_runs (checklist, started_at, duration_seconds, trigger, "
            "counts, emailed) VALUES (?, ?, ?, ?, ?, ?)",
            (
                run.checklist,
                run.started_at,
                run.duration_seconds,
                trigger,
                json.dumps(counts),
                int(emailed),
            ),
        )
        run_id = int(cursor.lastrowid or 0)
        connection.executemany(
            "INSERT INTO checklist_results (run_id, check_id, type, status, value, threshold, "
            "hint, detail, duration_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                )
                for r in run.results
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
    connection: sqlite3.Connection, checklist: str, limit: int = 10
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


def last_run(connection: sqlite3.Connection, checklist: str) -> ChecklistRun | None:
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
            "SELECT * FROM checklist_results WHERE run_id = ? ORDER BY rowid", (row["id"],)
        )
    ]
    return ChecklistRun(checklist, "", row["started_at"], row["duration_seconds"], results)
