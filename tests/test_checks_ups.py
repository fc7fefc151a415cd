"""``ups`` runs ``upsc``. NUT is not installed here, so ``upsc`` is a script on PATH that
prints what the real one prints (NUT 2.8, usbhid-ups) for a UPS on line power, on
battery and on low battery, and its error lines; where NUT is absent the check skips."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from ccwatch.checklists.checks.ups import parse_upsc
from ccwatch.checklists.result import Status
from tests.test_checklist_support import run

ONLINE = """\
Init SSL without certificate database
battery.charge: 100
battery.charge.low: 10
battery.charge.warning: 50
battery.runtime: 1965
battery.type: PbAc
device.mfr: American Power Conversion
device.model: Back-UPS ES 700G
device.type: ups
driver.name: usbhid-ups
driver.version: 2.8.0
input.voltage: 232.0
ups.load: 12
ups.status: OL
"""
ON_BATTERY = (
    ONLINE.replace("battery.charge: 100", "battery.charge: 63")
    .replace("battery.runtime: 1965", "battery.runtime: 1210")
    .replace("ups.status: OL", "ups.status: OB DISCHRG")
)
LOW_BATTERY = (
    ONLINE.replace("battery.charge: 100", "battery.charge: 9")
    .replace("battery.runtime: 1965", "battery.runtime: 130")
    .replace("ups.status: OL", "ups.status: OB DISCHRG LB")
)
# On line power, but the battery has not recharged since the last outage.
RECHARGING = (
    ONLINE.replace("battery.charge: 100", "battery.charge: 35")
    .replace("battery.runtime: 1965", "battery.runtime: 420")
    .replace("ups.status: OL", "ups.status: OL CHRG")
)


@pytest.fixture
def fake_upsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``upsc`` on PATH answering ``<name>@<host>`` from ``<tmp>/ups/<name>``; an
    unknown name gets upsc's own error line and exit code."""
    folder = tmp_path / "ups"
    folder.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "upsc"
    script.write_text(
        "#!/bin/sh\n"
        f'ups="{folder}/${{1%%@*}}"\n'
        'if [ -x "$ups" ]; then exec "$ups"; fi\n'
        'if [ -f "$ups" ]; then cat "$ups"; exit 0; fi\n'
        'echo "Init SSL without certificate database" >&2\n'
        'echo "Error: Unknown UPS" >&2\n'
        "exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return folder


def test_parse_upsc_ignores_the_ssl_notice() -> None:
    variables = parse_upsc(ONLINE)
    assert variables["ups.status"] == "OL"
    assert variables["device.model"] == "Back-UPS ES 700G"
    assert "Init SSL without certificate database" not in variables


def test_ups_online_on_battery_low_battery(fake_upsc: Path) -> None:
    (fake_upsc / "ups").write_text(ONLINE)
    (fake_upsc / "server-room").write_text(ON_BATTERY)
    (fake_upsc / "rack2").write_text(LOW_BATTERY)
    (fake_upsc / "rack3").write_text(RECHARGING)
    online = run("ups")
    assert online.status is Status.OK, online
    assert online.value == "ups@localhost: OL (on line power), charge 100%, runtime 33 min"
    assert "device.model: Back-UPS ES 700G" in online.detail
    on_battery = run("ups", ups="server-room", host="192.0.2.5")
    assert on_battery.status is Status.WARN
    assert on_battery.value == (
        "server-room@192.0.2.5: OB DISCHRG (on battery), charge 63%, runtime 20 min"
    )
    assert "runs on battery" in on_battery.hint
    low = run("ups", ups="rack2")
    assert low.status is Status.FAIL
    assert low.value == (
        "rack2@localhost: OB DISCHRG LB (low battery, on battery), charge 9%, runtime 2 min"
    )
    recharging = run("ups", ups="rack3")
    assert recharging.status is Status.WARN  # charge 35% < 50, runtime 7 min < 10 min
    assert recharging.threshold == (
        "status OL; charge fail below 20%, warn below 50%; runtime fail below 5m, warn below 10m"
    )
    relaxed = run(
        "ups", ups="rack3", warn_charge_below=30, warn_runtime_below="6m", fail_runtime_below="2m"
    )
    assert relaxed.status is Status.OK


def test_ups_errors_of_upsc_fail(fake_upsc: Path) -> None:
    unknown = run("ups", ups="nosuch")
    assert unknown.status is Status.FAIL
    assert unknown.value == "upsc nosuch@localhost: Error: Unknown UPS"
    assert "upsc -l localhost" in unknown.hint
    stale = fake_upsc / "stale"
    stale.write_text("#!/bin/sh\necho 'Error: Data stale' >&2\nexit 1\n")
    stale.chmod(0o755)
    assert run("ups", ups="stale").value == "upsc stale@localhost: Error: Data stale"
    hung = fake_upsc / "hung"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    outcome = run("ups", ups="hung", command_timeout="300ms")
    assert outcome.status is Status.FAIL
    assert outcome.value == "upsc hung@localhost: no answer within 300ms"


def test_ups_is_skipped_where_nut_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no upsc anywhere on it
    assert shutil.which("upsc") is None
    outcome = run("ups")
    assert outcome.status is Status.SKIPPED
    assert outcome.value == "NUT not installed (no upsc command): UPS not checked"


def test_ups_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="fail_charge_below is above warn_charge_below"):
        run("ups", warn_charge_below=20, fail_charge_below=50)
