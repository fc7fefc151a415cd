"""The shipped systemd unit: verified by systemd-analyze, hardened, notify-typed."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "ccwatch.service"


def unit_with_local_binary(tmp_path: Path) -> Path:
    # verify insists that ExecStart exists; point it at this checkout's entry point.
    ccwatch = Path(sys.executable).parent / "ccwatch"
    text = UNIT.read_text().replace("/opt/ccwatch/bin/ccwatch", str(ccwatch))
    path = tmp_path / "ccwatch.service"
    path.write_text(text)
    return path


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_has_the_required_settings() -> None:
    service = service_section()
    assert service["Type"] == ["notify"]
    assert service["Restart"] == ["on-failure"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["User"] == ["ccwatch"]
    assert service["StateDirectory"] == ["ccwatch"]
    assert service["ConfigurationDirectory"] == ["ccwatch"]
    assert "WatchdogSec" in service
    for hardening in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp",
                      "RestrictAddressFamilies", "CapabilityBoundingSet", "SystemCallFilter"):
        assert hardening in service, hardening
    assert service["ProtectSystem"] == ["strict"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    result = subprocess.run(
        [analyze, "verify", str(unit_with_local_binary(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ccwatch.service" not in result.stderr, result.stderr


def test_security_exposure_is_ok(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit_with_local_binary(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for ccwatch.service: ([0-9.]+) (\w+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot score units offline: {result.stderr.strip()[:200]}")
    exposure = float(match.group(1))
    # README reports this figure; systemd calls < 2.0 "OK" (lower is better, 10 is unprotected).
    assert exposure < 2.0, result.stdout


def test_configparser_reads_the_unit() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"
