"""Three workers, twelve sites (``sites:``), a real PostgreSQL and a real Mosquitto.

Every site has an incident in progress and an exporter publishing its ACD every 0.5 s
(QoS 1). Then:

1. SIGKILL of a worker: its sites are processed by the other two within lease TTL + 5 s;
   the escalation published right after the kill (QoS 1, while nobody held those sites)
   is processed by the new holders, on the same incident ids.
2. SIGSTOP of a worker until its leases were taken, and for longer than ``stale_after``
   (its lifecycle, frozen, would mark every incident ``nodata`` once it runs again);
   the new holders process a de-escalation; SIGCONT: the frozen worker stops those
   sites and writes and sends nothing (no ``nodata`` anywhere).
3. The killed worker comes back: sites move back to it one at a time until each worker
   holds four. An acknowledgement through the API of a worker that does not hold the
   site is refused (409, naming the holder); through the holder's it is made.

The webhook receiver sees exactly one ``open``, ``escalate`` and ``deescalate`` per
incident, and every idempotency key once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import core_config, metric
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow

SITES = [f"s{i:02d}" for i in range(12)]
TTL = 3.0
STALE_AFTER = 5.0
TOKEN = "fleet-test-token-0123456789"


class Exporters:
    """Each site's exporter: publishes its ACD's current value every ``every`` seconds
    (QoS 1), like a contact center's metrics exporter."""

    def __init__(self, broker: Mosquitto, every: float = 0.5) -> None:
        self.values = dict.fromkeys(SITES, 5)
        self.every = every
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10), "cannot connect to the test broker"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish(self, site: str) -> None:
        body = {"seats": 100, "agents_unable_to_take_calls": self.values[site], "up": True}
        self.client.publish(f"cc/{site}/acd/metrics", json.dumps(body), qos=1).wait_for_publish(10)

    def set_all(self, unable: int, sites: list[str] | None = None) -> None:
        """New values, published at once (QoS 1) and then every round."""
        for site in sites or SITES:
            self.values[site] = unable
            self.publish(site)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for site in SITES:
                self.publish(site)

    def start(self) -> Exporters:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver().start()
    yield peer
    peer.close()


def holders(dsn: str) -> dict[str, tuple[str | None, int]]:
    """site -> (holder while the lease is unexpired, epoch)."""
    import psycopg

    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT site, CASE WHEN expires_at > EXTRACT(EPOCH FROM now()) THEN holder END,"
            " epoch FROM site_leases"
        ).fetchall()
    return {site: (holder, epoch) for site, holder, epoch in rows}


def incidents_by_site(dsn: str) -> dict[str, tuple[str, int, str]]:
    """site -> (id, severity, state) of its unresolved acd incident."""
    import psycopg

    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT site, id, severity, state FROM incidents"
            " WHERE component = 'acd' AND state NOT IN ('resolved', 'expired')"
        ).fetchall()
    return {site: (ident, severity, state) for site, ident, severity, state in rows}


def timeline_changes(dsn: str) -> Counter[str]:
    import psycopg

    with psycopg.connect(dsn) as db:
        rows = db.execute("SELECT change FROM incident_timeline").fetchall()
    return Counter(change for (change,) in rows)


def share(dsn: str) -> Counter[str | None]:
    return Counter(holder for holder, _ in holders(dsn).values())


def test_three_workers_fail_over_without_losing_or_repeating_anything(
    tmp_path: Path,
    mosquitto: Mosquitto,
    receiver: Receiver,
    pg_database: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = core_config(
        tmp_path,
        mosquitto,
        state={"backend": "postgresql", "dsn_env": "CCWATCH_STATE_DSN", "pool": {"max_size": 8}},
        tickets=[{"type": "webhook", "name": "hook", "url": f"{receiver.url}/hook"}],
        classification={"stale_after": f"{STALE_AFTER:g}s"},
        sites={"names": SITES},
        fleet={"lease_ttl": f"{TTL:g}s", "renew_every": "500ms", "rebalance_every": "1s"},
    )
    config["state"].pop("path")
    config["mqtt"].pop("client_id")
    config.pop("site")
    env = {"CCWATCH_STATE_DSN": pg_database, "CCWATCH_HTTP_TOKEN": TOKEN}
    workers: dict[str, DaemonProcess] = {}
    for name in ("w1", "w2", "w3"):
        own = json.loads(json.dumps(config))
        own["fleet"]["worker_id"] = name
        # Each worker's dead-man's switch pings its own URL (a secret: from the env).
        own["heartbeat"] = {"url_env": f"CCWATCH_PING_{name.upper()}", "interval": "1s"}
        env[f"CCWATCH_PING_{name.upper()}"] = f"{receiver.url}/ping/{name}"
        own["http"] = {"listen": f"127.0.0.1:{_free_port()}", "token_env": "CCWATCH_HTTP_TOKEN"}
        workers[name] = daemon_factory(own, env=env)
    for daemon in workers.values():
        daemon.wait_http("/readyz")
    wait_until(lambda: sorted(share(pg_database).values()) == [4, 4, 4], timeout=30)
    # Every worker is healthy (its sites' sessions up, the state store writable): it pings.
    wait_until(lambda: pinged(receiver) >= {"w1", "w2", "w3"}, timeout=15)
    assert not [r.path for r in list(receiver.accepted) if r.path.endswith("/fail")]

    exporters = Exporters(mosquitto).start()
    try:
        # Every site: a major incident, opened and sent.
        wait_until(lambda: len(incidents_by_site(pg_database)) == 12, timeout=20)
        wait_until(lambda: len(events(receiver, "open")) == 12, timeout=20)
        ids = {site: ident for site, (ident, _, _) in incidents_by_site(pg_database).items()}
        view = workers["w1"].get("/api/sites").json()
        assert view["fleet"] and len(view["sites"]) == 12
        assert {w["worker"]: len(w["sites"]) for w in view["workers"]} == {
            "w1": 4, "w2": 4, "w3": 4
        }  # fmt: skip
        assert "Sites (12)" in workers["w2"].get("/").text

        # 1. SIGKILL: the escalation published during the failover is processed by the
        # new holders within TTL + 5 s, on the same incidents.
        before = holders(pg_database)
        victim_sites = sorted(s for s, (h, _) in before.items() if h == "w1")
        workers["w1"].kill()
        killed_at = time.monotonic()
        exporters.set_all(23)
        wait_until(
            lambda: all(sev == 3 for _, sev, _ in incidents_by_site(pg_database).values()),
            timeout=TTL + 5,
        )
        failover = time.monotonic() - killed_at
        after = holders(pg_database)
        for site in victim_sites:
            holder, epoch = after[site]
            assert holder in ("w2", "w3") and epoch > before[site][1], (site, after[site])
        assert {s: i for s, (i, _, _) in incidents_by_site(pg_database).items()} == ids
        wait_until(lambda: len(events(receiver, "escalate")) == 12, timeout=10)
        print(f"failover of {len(victim_sites)} sites: processed {failover:.1f} s after SIGKILL")

        # 2. SIGSTOP until the frozen worker's leases were taken and longer than
        # stale_after; the new holders process a de-escalation; then SIGCONT.
        frozen = workers["w2"]
        before = holders(pg_database)
        frozen_sites = sorted(s for s, (h, _) in before.items() if h == "w2")
        frozen.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            wait_until(
                lambda: all(holders(pg_database)[s][0] == "w3" for s in frozen_sites),
                timeout=TTL + 10,
            )
            exporters.set_all(5)
            wait_until(
                lambda: all(sev == 2 for _, sev, _ in incidents_by_site(pg_database).values())
                and time.monotonic() - stopped_at > STALE_AFTER + 1,
                timeout=20,
            )
        finally:
            frozen.signal(signal.SIGCONT)
        wait_until(lambda: frozen.log().count("not renewed in time") >= 1, timeout=10)
        # Its lease rounds go on: it is live again and takes a share back, slowly.
        wait_until(lambda: sorted(share(pg_database).values()) == [6, 6], timeout=30)
        wait_until(lambda: len(events(receiver, "deescalate")) == 12, timeout=10)

        # 3. The killed worker comes back: the sites spread over three again.
        workers["w1"].start()
        workers["w1"].wait_http("/readyz")
        wait_until(lambda: sorted(share(pg_database).values()) == [4, 4, 4], timeout=40)
        assert {s: i for s, (i, _, _) in incidents_by_site(pg_database).items()} == ids

        # The API changes an incident on the worker holding its site; another refuses
        # and names it. Metrics carry the site.
        holder = holders(pg_database)["s00"][0]
        assert holder is not None
        other = next(name for name in workers if name != holder)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        path = f"/api/incidents/{ids['s00']}/ack"
        refused = httpx.post(workers[other].base_url + path, headers=auth, json={"by": "asha"})
        assert refused.status_code == 409, refused.text
        assert "site s00" in refused.json()["error"] and holder in refused.json()["error"]
        acked = httpx.post(workers[holder].base_url + path, headers=auth, json={"by": "asha"})
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged", acked.text
        wait_until(lambda: len(events(receiver, "acknowledge")) == 1, timeout=10)
        labels = {"site": "s00", "severity": "major"}
        assert metric(workers[holder], "ccwatch_incidents_open", labels) == 1
        assert metric(workers[other], "ccwatch_incidents_open", labels) is None
        assert metric(workers[holder], "ccwatch_fleet_sites_held") == 4
        assert metric(workers[holder], "ccwatch_mqtt_connected", {"site": "s00"}) == 1
    finally:
        exporters.close()

    # Exactly one open, escalate and de-escalate per incident; every event once; and
    # nothing of the frozen worker after its leases were taken (no nodata anywhere).
    for event in ("open", "escalate", "deescalate"):
        per_incident = Counter(r.json["incident_id"] for r in events(receiver, event))
        assert per_incident == Counter(ids.values()), event
    keys = [r.headers["Idempotency-Key"] for r in receiver.accepted if r.path.endswith("/hook")]
    assert len(keys) == len(set(keys)), [k for k, n in Counter(keys).items() if n > 1]
    assert not events(receiver, "nodata")
    changes = timeline_changes(pg_database)
    assert changes["nodata"] == 0 and changes["opened"] == 12
    assert changes["escalated"] == 12 and changes["de-escalated"] == 12
    for daemon in workers.values():
        assert "a ccwatch bug" not in daemon.log(), daemon.log()[-3000:]


def events(receiver: Receiver, event: str) -> list[Any]:
    hook = [r for r in list(receiver.accepted) if r.path.endswith("/hook")]
    return [r for r in hook if r.json.get("event") == event]


def pinged(receiver: Receiver) -> set[str]:
    """The workers whose dead-man's switch pinged (healthy), by the URL's last part."""
    return {
        r.path.rsplit("/", 1)[1] for r in list(receiver.accepted) if r.path.startswith("/ping/")
    }


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()
