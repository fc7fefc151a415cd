"""Issue 12 "Show", end to end: the real daemon (``ccwatch run``), Mosquitto and a real
RT 5 (tests/rt.py), an ``rt`` upstream with its token in an environment variable.

1. A critical sample opens an incident; the daemon creates its RT ticket. The daemon
   talks to RT through a pass-through proxy that, this once, forwards the create to RT
   and then holds RT's answer back: the ticket exists in RT, ccwatch has neither the
   answer nor the link nor the delivered outbox row, and it is SIGKILLed right there
   (the crash between create and commit). Restarted, it finds the ticket by its custom
   field: still ONE ticket, and the link recorded.
2. The vendor replies through REST2 as ``vendor`` → within the poll interval (1 s) the
   incident is acknowledged by ``rt:vendor``.
3. The vendor sets the ticket ``stalled`` → the incident waits on the customer.
4. Clean samples resolve the incident → the RT ticket is ``resolved`` and its history has
   ccwatch's resolve comment.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DaemonProcess, Mosquitto, base_config, wait_until
from tests.rt import RTServer
from tests.test_e2e_core import Publisher, agents
from tests.test_rt_server import search
from tests.test_tickets_faults import HOLDS, TOKEN, publisher  # noqa: F401

TOKEN_ENV = "CCWATCH_TEST_RT_TOKEN"


pytestmark = pytest.mark.slow


class RTProxy:
    """Forwards every request to RT; while ``hold_create`` is set, a ``POST /ticket`` is
    forwarded (RT creates the ticket) and its answer never sent back."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold_create = threading.Event()
        self.held = threading.Event()  # a create reached RT and its answer is held
        self.release = threading.Event()
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path.split("?", 1)[0]
                proxy.requests.append((self.command, path))
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() in ("authorization", "content-type", "accept", "if-match")
                }
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body,
                    timeout=30,
                )  # fmt: skip
                if (
                    self.command == "POST"
                    and path == "/REST/2.0/ticket"
                    and proxy.hold_create.is_set()
                ):
                    proxy.held.set()
                    proxy.release.wait(60)
                    self.close_connection = True
                    return  # RT created it; ccwatch never hears so
                self.send_response(answer.status_code)
                for name in ("Content-Type", "ETag", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if (m, p) == (method, path))

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rt_proxy(rt_server: RTServer) -> Iterator[RTProxy]:
    proxy = RTProxy(rt_server.base_url)
    proxy.thread.start()
    yield proxy
    proxy.close()


def rows(state_db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(state_db, timeout=10)) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def test_rt_ticket_once_across_a_crash_vendor_reply_stalled_and_resolve(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    rt_server: RTServer,
    rt_proxy: RTProxy,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    rt = rt_server
    state_db = tmp_path / "state.db"
    config = base_config(
        tmp_path,
        mqtt={"port": mosquitto.port, "reconnect_max": "1s"},
        http={"token_env": "CCWATCH_TEST_HTTP_TOKEN"},
        classification=HOLDS,
        components={"acd": {"seats": 100}},
        tickets=[
            {
                "type": "rt",
                "url": rt_proxy.url,
                "queue": rt.queue,
                "token_env": TOKEN_ENV,
                "poll_interval": "1s",
                "retry_max": "500ms",
                "timeout": "30s",
            }
        ],
        logging={"level": "info"},
    )
    env = {"CCWATCH_TEST_HTTP_TOKEN": TOKEN, TOKEN_ENV: rt.ccwatch_token}
    timings: dict[str, float] = {}
    begun = time.monotonic()

    def mark(phase: str) -> None:
        timings[phase] = time.monotonic() - begun

    # 1. Open; the create reaches RT, its answer is held; SIGKILL there.
    rt_proxy.hold_create.set()
    daemon = daemon_factory(config, env=env)
    daemon.wait_http("/readyz")
    mark("daemon ready")
    publisher.send("acd", agents(25))

    def active() -> dict[str, Any] | None:
        found = daemon.get("/api/incidents", params={"state": "active"}).json()["incidents"]
        return found[0] if found else None

    incident = wait_until(active, timeout=20)
    incident_id, key = incident["id"], incident["dedup_key"]
    assert rt_proxy.held.wait(20), f"no create reached RT:\n{daemon.log()}"
    [ticket_id] = wait_until(lambda: [i["id"] for i in search(rt, key)["items"]], timeout=10)
    mark("ticket created in RT, answer held")
    daemon.kill()  # SIGKILL
    mark("SIGKILLed")
    assert (
        rows(state_db, "SELECT ticket_id FROM desk_tickets WHERE incident_id = ?", incident_id)
        == []
    )
    assert rows(
        state_db,
        "SELECT status FROM outbox WHERE incident_id = ? AND upstream = 'rt' AND event = 'open'",
        incident_id,
    ) != [("delivered",)]

    # Restarted: the open is delivered again, the ticket found by its custom field.
    rt_proxy.hold_create.clear()
    rt_proxy.release.set()
    daemon.start()
    daemon.wait_http("/readyz")
    wait_until(
        lambda: rows(
            state_db, "SELECT ticket_id FROM desk_tickets WHERE incident_id = ?", incident_id
        ) == [(ticket_id,)],
        timeout=20,
    )  # fmt: skip
    mark("restarted, link recorded")
    assert [i["id"] for i in search(rt, key)["items"]] == [ticket_id]
    assert rt_proxy.count("POST", "/REST/2.0/ticket") == 1
    assert rows(
        state_db,
        "SELECT status FROM outbox WHERE incident_id = ? AND upstream = 'rt' AND event = 'open'",
        incident_id,
    ) == [("delivered",)]

    # 2. The vendor's reply acknowledges the incident (poll_interval 1 s).
    answer = rt.rest(
        "POST",
        f"ticket/{ticket_id}/correspond",
        user=rt.vendor_user,
        json={"Content": "Vendor L1: we are restarting the ACD.", "ContentType": "text/plain"},
    )
    assert answer.status_code == 201, answer.text
    replied = time.monotonic()

    def shown() -> dict[str, Any]:
        body: dict[str, Any] = daemon.get(f"/api/incidents/{incident_id}").json()
        return body

    wait_until(lambda: shown()["acknowledged_by"] == "rt:vendor", timeout=15)
    mark(f"acknowledged by rt:vendor ({time.monotonic() - replied:.1f} s after the reply)")

    # 3. Stalled in RT: the incident waits on the customer.
    answer = rt.rest("PUT", f"ticket/{ticket_id}", user=rt.vendor_user, json={"Status": "stalled"})
    assert answer.status_code == 200 and "stalled" in answer.text, answer.text
    wait_until(lambda: shown()["state"] == "waiting_on_customer", timeout=15)
    mark("waiting on customer")

    # 4. Clean samples resolve it; RT's ticket is resolved with ccwatch's summary.
    publisher.send("acd", agents(0))
    wait_until(lambda: shown()["state"] == "resolved", timeout=20)
    mark("incident resolved")
    wait_until(
        lambda: rt.rest("GET", f"ticket/{ticket_id}").json()["Status"] == "resolved", timeout=20
    )
    mark("RT ticket resolved")

    def ccwatch_comments() -> list[str]:
        items = rt.rest(
            "GET", f"ticket/{ticket_id}/history", params={"fields": "Type,Creator", "per_page": 100}
        ).json()["items"]
        return [
            "\n".join(
                str(a.get("Content") or "")
                for a in rt.rest(
                    "GET", f"transaction/{t['id']}/attachments", params={"fields": "Content"}
                ).json()["items"]
            )
            for t in items
            if t["Type"] == "Comment" and t["Creator"]["id"] == rt.ccwatch_user
        ]

    # The RCA draft, written after the resolve, reaches the ticket as a comment too.
    comments = wait_until(
        lambda: (c := ccwatch_comments()) and any("# RCA draft" in x for x in c) and c, timeout=30
    )
    mark("RCA draft commented")
    (resolved,) = [c for c in comments if c.startswith("ccwatch: resolved")]
    assert key in resolved, comments
    assert "acd at blr1: 25 of 100 agents cannot take calls" in resolved, resolved
    # The vendor's acknowledgement came from RT: it is not echoed back as a comment.
    assert not [c for c in comments if c.startswith("ccwatch: acknowledge")], comments
    assert [i["id"] for i in search(rt, key)["items"]] == [ticket_id]
    print("\nRT e2e timings: " + ", ".join(f"{p} {t:.1f} s" for p, t in timings.items()))
    print("ccwatch's comments:", [c.splitlines()[0] for c in comments])
