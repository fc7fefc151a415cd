"""The operator pages in a real headless Chromium against a running daemon with seeded data.

Screenshots go to ``test-artifacts/pages/`` (1280x900 and 390x844 of each page). The
DOM Chromium built (``--dump-dom``, after the pages' scripts ran) is checked for what an
operator relies on: a tile for every component, a chart path with one point per stored
minute, a countdown for the open incident, no horizontal scroll on a phone, and a hostile
component name shown as text, never as markup.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccwatch import history
from ccwatch.checklists.history import save_run
from ccwatch.checklists.result import ChecklistRun, CheckResult, Status
from ccwatch.compose import open_state
from ccwatch.maintenance.store import add_window
from ccwatch.settings import KNOWN_COMPONENTS
from tests.conftest import REPO_ROOT, DaemonProcess, base_config, wait_until
from tests.test_e2e_core import Publisher

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "pages"
HOSTILE = "<img src=x onerror=alert(1)>&amp;"
SEEDED_MINUTES = 90
SIZES = {"wide": (1280, 900), "phone": (390, 844)}

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/install-test-deps.sh installs it)"
)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)


class _Dom(HTMLParser):
    """Just enough of the dumped DOM: every element with its attributes and own text."""

    VOID = {"meta", "link", "input", "br", "img", "hr", "path", "line"}

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        if self._open:
            self._open[-1].children.append(element)
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self._open and self._open[-1].tag == tag:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index].tag == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        def matches(e: Element) -> bool:
            if tag is not None and e.tag != tag:
                return False
            for name, value in attrs.items():
                name = name.rstrip("_").replace("_", "-")
                if name == "class":
                    if value not in e.attrs.get("class", "").split():
                        return False
                elif e.attrs.get(name) != value:
                    return False
            return True

        return [e for e in self.elements if matches(e)]


def descendants(element: Element) -> Iterator[Element]:
    for child in element.children:
        yield child
        yield from descendants(child)


def chromium(url: str, size: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    width, height = SIZES[size]
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--run-all-compositor-stages-before-draw",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=3000",
            *extra,
            url,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def render(daemon: DaemonProcess, path: str, name: str, profile: Path) -> dict[str, _Dom]:
    """Screenshots at both sizes, and the DOM of each size."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    doms = {}
    for size in SIZES:
        shot = ARTIFACTS / f"{name}-{size}.png"
        shot.unlink(missing_ok=True)
        chromium(daemon.base_url + path, size, profile, f"--screenshot={shot}")
        assert shot.stat().st_size > 1000, f"no screenshot of {path} at {size}"
        dom = _Dom()
        dom.feed(chromium(daemon.base_url + path, size, profile, "--dump-dom"))
        doms[size] = dom
    return doms


def assert_no_horizontal_scroll(dom: _Dom, page: str) -> None:
    (root,) = dom.find("html")
    assert "data-scroll-width" in root.attrs, f"{page}: the measuring script did not run"
    scroll, client = int(root.attrs["data-scroll-width"]), int(root.attrs["data-client-width"])
    assert scroll <= client, f"{page} scrolls sideways at 390 px: {scroll} > {client}"


def seed(state_path: Path, now: float) -> None:
    """History for every component, and one checklist run with a failing check."""
    store = open_state(state_path)
    try:
        first = history.minute_of(now) - SEEDED_MINUTES * 60
        for offset in range(SEEDED_MINUTES):
            minute = first + offset * 60
            loss = 0.3 * (offset % 30) / 30  # a saw tooth through every severity band
            store.run_sync(
                lambda conn, minute=minute, loss=loss: history.record(
                    conn,
                    minute,
                    {
                        name: (loss, 3 if loss >= 0.2 else 2 if loss > 0.02 else 1)
                        for name in (*KNOWN_COMPONENTS, HOSTILE)
                    },
                )
            )
        run = ChecklistRun(
            "daily",
            "blr1",
            now - 3600,
            1.5,
            [
                CheckResult("disk_root", "disk", "", Status.OK, "55% free", ">= 20%", "", "", 0.1),
                CheckResult(
                    "dialer_port",
                    "tcp",
                    "",
                    Status.FAIL,
                    "refused",
                    "open",
                    f"start the dialer {HOSTILE}",
                    "connection refused",
                    0.2,
                ),
            ],
        )
        store.run_sync(lambda conn: save_run(conn, run, "schedule", emailed=False))
        # An ad-hoc maintenance window on ivr, now (the tile badge and /maintenance).
        store.run_sync(
            lambda conn: add_window(
                conn, ["ivr"], now - 60, now + 3600, f"IVR patch {HOSTILE}", "test", now
            )
        )
    finally:
        store.close()


@pytest.fixture
def seeded_daemon(tmp_path: Path, mosquitto: Any, daemon_factory: Any) -> Iterator[DaemonProcess]:
    checklists = tmp_path / "checklists"
    checklists.mkdir()
    (checklists / "daily.yaml").write_text(
        "name: daily\nchecks:\n  - id: disk_root\n    type: disk\n"
        "    params: {path: /, warn_free_percent: 1, fail_free_percent: 1}\n"
    )
    config = base_config(
        tmp_path,
        mqtt={"port": mosquitto.port, "reconnect_max": "1s"},
        classification={
            "open_after": "0s",
            "resolve_after": "1s",
            "stale_after": "60s",
            "window": "5s",
        },
        components={HOSTILE: {"seats": 100}},
        checklists={"dir": str(checklists)},
    )
    seed(Path(config["state"]["path"]), time.time())
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher = Publisher(mosquitto)
    try:
        publisher.send(HOSTILE, {"seats": 100, "agents_unable_to_take_calls": 50, "up": True})
        publisher.send("acd", {"seats": 100, "agents_unable_to_take_calls": 0, "up": True})

        def opened() -> bool:
            active = daemon.get("/api/incidents", params={"state": "active"}).json()
            tiles = {t["component"]: t for t in daemon.get("/api/overview").json()["components"]}
            return bool(active["incidents"]) and tiles[HOSTILE]["loss"] is not None

        wait_until(opened, timeout=20)
        yield daemon
    finally:
        publisher.close()


@needs_chromium
def test_pages_render_in_chromium_at_desk_and_phone_sizes(
    seeded_daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon = seeded_daemon
    profile = tmp_path / "chromium-profile"
    overview = daemon.get("/api/overview").json()
    components = [t["component"] for t in overview["components"]]
    assert set(components) == {*KNOWN_COMPONENTS, HOSTILE}
    (incident,) = overview["incidents"]
    assert incident["component"] == HOSTILE and incident["next_due"] is not None

    # The overview: a tile per component, a chart point per stored minute, a countdown.
    doms = render(daemon, "/", "overview", profile)
    for size, dom in doms.items():
        tiles = {t.attrs["data-component"]: t for t in dom.find("section", class_="tile")}
        assert set(tiles) == set(components), size
        for name in KNOWN_COMPONENTS:
            if name == "acd":  # acd has live samples too: its current minute is recorded
                continue
            (path,) = [e for e in descendants(tiles[name]) if e.tag == "path"]
            points = path.attrs["d"].count("M") + path.attrs["d"].count("L")
            assert points == SEEDED_MINUTES, (size, name, path.attrs["d"][:80])
        assert "in maintenance" in tiles["ivr"].text, size  # the seeded ad-hoc window
        lines = [e for e in descendants(tiles["ivr"]) if e.tag == "line"]
        assert {line.attrs["class"] for line in lines} == {"major", "critical"}
        # The hostile name is text in its tile, never an element.
        assert dom.find("img") == []
        (name_span,) = [
            e for e in descendants(tiles[HOSTILE]) if "name" in e.attrs.get("class", "")
        ]
        assert name_span.text == HOSTILE
        rows = dom.find("tr", class_="incident-row")
        assert [r.attrs["data-incident"] for r in rows] == [incident["id"]]
        countdowns = [e for e in descendants(rows[0]) if "countdown" in e.attrs.get("class", "")]
        assert countdowns and countdowns[0].attrs["data-due"]
        assert countdowns[0].text.startswith(("in ", "overdue "))
        failing = dom.find("section", id="checklists")[0]
        assert "dialer_port" in failing.text and HOSTILE in failing.text
    assert_no_horizontal_scroll(doms["phone"], "/")

    # The incident: summary, chart, clocks, timeline, the ack form without a token.
    doms = render(daemon, f"/incidents/{incident['id']}", "incident", profile)
    for dom in doms.values():
        (section,) = dom.find("section", class_="incident")
        assert HOSTILE in section.text and dom.find("img") == []
        assert [e for e in descendants(section) if e.tag == "svg"]
        markers = dom.find("line", class_="marker")
        assert "opened" in {m.attrs["class"].split()[1] for m in markers}
        assert dom.find("tr", class_="clock") and dom.find("tr", class_="timeline")
        tokens = dom.find("input", name="token")
        assert len(tokens) == 2  # acknowledge, start maintenance: each asks for the token
        for token in tokens:
            assert token.attrs.get("type") == "password" and not token.attrs.get("value")
        forms = {f.attrs.get("id") for f in dom.find("form")}
        assert {"ack", "maintenance"} <= forms
    assert_no_horizontal_scroll(doms["phone"], "/incidents/<id>")

    doms = render(daemon, "/incidents?state=active", "incidents", profile)
    for dom in doms.values():
        assert len(dom.find("tr", class_="incident-row")) == 1
    assert_no_horizontal_scroll(doms["phone"], "/incidents")

    doms = render(daemon, "/maintenance", "maintenance", profile)
    for size, dom in doms.items():
        (active,) = [m for m in dom.find("section", class_="maintenance")
                     if m.attrs.get("data-list") == "active"]  # fmt: skip
        windows = [e for e in descendants(active) if e.tag == "tr" and "window" in e.attrs.get("class", "")]
        assert len(windows) == 1 and "ivr" in windows[0].text, size
        assert HOSTILE in windows[0].text and dom.find("img") == []
    assert_no_horizontal_scroll(doms["phone"], "/maintenance")
    ivr_tile = next(t for t in render_overview_tiles(daemon) if t["component"] == "ivr")
    assert ivr_tile["maintenance"], "the ivr tile shows its maintenance window"

    doms = render(daemon, "/checklists", "checklists", profile)
    for dom in doms.values():
        checks = dom.find("tr", class_="check")
        assert len(checks) == 2 and "start the dialer" in checks[0].text
        assert dom.find("img") == []
    assert_no_horizontal_scroll(doms["phone"], "/checklists")


def render_overview_tiles(daemon: DaemonProcess) -> list[dict[str, Any]]:
    tiles: list[dict[str, Any]] = daemon.get("/api/overview").json()["components"]
    return tiles


def test_json_twins_and_filters(seeded_daemon: DaemonProcess) -> None:
    daemon = seeded_daemon
    checklists = daemon.get("/api/checklists").json()["checklists"]
    assert checklists[0]["run"]["counts"]["fail"] == 1
    (incident,) = daemon.get("/api/incidents", params={"severity": "critical"}).json()["incidents"]
    assert daemon.get("/api/incidents", params={"severity": "minor"}).json()["total"] == 0
    assert daemon.get("/api/incidents", params={"component": "acd"}).json()["total"] == 0
    assert daemon.get("/api/incidents", params={"until": "2001-01-01"}).json()["total"] == 0
    bad = daemon.get("/api/incidents", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    detail = daemon.get(f"/api/incidents/{incident['id']}").json()
    assert [c["name"] for c in detail["sla_clocks"]][:2] == ["first response", "resolution"]
    assert detail["timeline"][0]["change"] == "opened"
    page = daemon.get(f"/incidents/{incident['id']}")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
    assert daemon.get("/incidents/nope").status_code == 404
    assert httpx.get(daemon.base_url + "/incidents?state=bogus", timeout=5).status_code == 400
    # One site (no sites:): /api/sites lists it, held by this process.
    sites = daemon.get("/api/sites").json()
    assert sites["fleet"] is False and sites["workers"] == []
    (site,) = sites["sites"]
    assert site["site"] == daemon.config["site"] and site["held_here"] is True
    assert site["active_incidents"] >= 1
