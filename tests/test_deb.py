"""The Debian package: built with dh-virtualenv, lintian-clean, installed, upgraded, purged.

This test changes the machine it runs on: it installs the package with dpkg (which creates
the ccwatch user), reinstalls it, removes and purges it. It runs only as root, skips when
this machine already has anything of ccwatch (package, user, /etc/ccwatch, state) so it
never clobbers a real installation, and purges whatever it installed even when it fails.
``make test`` installs the build tools (scripts/install-test-deps.sh).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Mosquitto, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
UNIT = Path("/lib/systemd/system/ccwatch.service")
CONF = Path("/etc/ccwatch")
ENABLED_LINK = Path("/etc/systemd/system/multi-user.target.wants/ccwatch.service")
# Everything the package, its maintainer scripts or the service may create.
LEFTOVERS = [
    CONF,
    Path("/opt/venvs/ccwatch"),
    Path("/usr/bin/ccwatch"),
    UNIT,
    Path("/usr/lib/sysusers.d/ccwatch.conf"),
    Path("/var/lib/ccwatch"),
    ENABLED_LINK,
    Path("/var/lib/systemd/deb-systemd-helper-enabled/ccwatch.service.dsh-also"),
    Path("/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/ccwatch.service"),
    Path("/usr/share/doc/ccwatch"),
    Path("/usr/share/man/man1/ccwatch.1.gz"),
    Path("/usr/share/lintian/overrides/ccwatch"),
]
BUILD_TOOLS = {
    "dpkg-buildpackage": "dpkg-dev",
    "dh": "debhelper",
    "dh_virtualenv": "dh-virtualenv",
    "help2man": "help2man",
    "lintian": "lintian",
    "setpriv": "util-linux",
    "systemd-analyze": "systemd",
}
LOCK = Path("/run/lock/ccwatch-test-deb.lock")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "installs a package with dpkg: needs root"
    missing = [package for tool, package in BUILD_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install {' '.join(missing)})"
    venv = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip"], capture_output=True)
    if venv.returncode != 0:
        return "/usr/bin/python3 has no venv/ensurepip (apt-get install python3-venv)"
    return None


def existing_ccwatch() -> str | None:
    """Why this machine already has ccwatch (which the test must not touch), or None."""
    status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "ccwatch"])
    if status.returncode == 0 and status.stdout.strip() not in ("", "un"):
        return f"the ccwatch package is on this machine ({status.stdout.strip()})"
    with contextlib.suppress(KeyError):
        pwd.getpwnam("ccwatch")
        return "a user ccwatch exists"
    with contextlib.suppress(KeyError):
        grp.getgrnam("ccwatch")
        return "a group ccwatch exists"
    present = [str(path) for path in LEFTOVERS if path.exists() or path.is_symlink()]
    return f"{', '.join(present)} exist(s)" if present else None


def run(args: list[str], *, timeout: float = 300, cwd: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
        cwd=cwd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", **(env or {})},
    )


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting (up to 5 min) while another apt/dpkg of this shared machine holds the lock."""
    deadline = time.monotonic() + 300
    while True:
        result = run(["dpkg", *args])
        if "lock" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(1)


def as_ccwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["setpriv", "--reuid=ccwatch", "--regid=ccwatch", "--init-groups", "--", *args],
               cwd="/")


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One package test at a time on this machine (other checkouts may run the suite)."""
    with LOCK.open("w") as handle:
        deadline = time.monotonic() + 540
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another test holds {LOCK} (a package test in another checkout)")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def deb() -> Iterator[Path]:
    if reason := missing_requirements():
        pytest.skip(reason)
    # Not under pytest's basetemp: other checkouts' pytest runs (as root) prune old ones.
    with tempfile.TemporaryDirectory(prefix="ccwatch-test-deb-") as tmp:
        out = Path(tmp)
        started = time.monotonic()
        result = run([str(REPO / "packaging" / "build-deb"), str(out)],
                     env={"CCWATCH_DEB_LINTIAN": "0", "TMPDIR": str(out)}, timeout=480)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (deb,) = out.glob(f"ccwatch_{VERSION}-1_*.deb")
        print(f"\nbuilt {deb.name}: {deb.stat().st_size} bytes in {time.monotonic() - started:.0f}s")
        yield deb


@pytest.fixture
def clean_machine() -> Iterator[None]:
    """The package test's machine state: nothing of ccwatch before, nothing after."""
    with machine_lock():
        if reason := existing_ccwatch():
            pytest.skip(f"{reason}; this test installs and purges ccwatch and would clobber it")
        try:
            yield
        finally:
            # Leave the machine as found, whatever the test reached. Safe: nothing of
            # ccwatch existed before (checked above).
            dpkg("--purge", "ccwatch")
            for user_or_group in (["userdel", "ccwatch"], ["groupdel", "ccwatch"]):
                run(user_or_group)
            for path in LEFTOVERS:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def run_installed_daemon(mosquitto: Mosquitto) -> None:
    user = pwd.getpwnam("ccwatch")
    with tempfile.TemporaryDirectory(prefix="ccwatch-test-deb-run-") as tmp:
        folder = Path(tmp)
        os.chown(folder, user.pw_uid, user.pw_gid)
        config = yaml.safe_load((CONF / "config.yaml").read_text())
        port = free_port()
        config["mqtt"]["port"] = mosquitto.port
        config["http"]["listen"] = f"127.0.0.1:{port}"
        config["state"]["path"] = str(folder / "state.db")
        config["checklists"]["dir"] = str(CONF / "checklists")
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen(
            ["setpriv", "--reuid=ccwatch", "--regid=ccwatch", "--init-groups", "--",
             "/usr/bin/ccwatch", "-c", str(folder / "config.yaml"), "run"],
            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            def ready() -> bool:
                assert daemon.poll() is None, daemon.communicate()[0]
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
                return False

            wait_until(ready, timeout=30)
        finally:
            daemon.terminate()
            output = daemon.communicate(timeout=30)[0]
        assert daemon.returncode == 0, output


def test_lintian_is_clean(deb: Path) -> None:
    result = run(["lintian", "--fail-on", "error,warning", "--display-info", str(deb)])
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:", "I:")]


def test_install_upgrade_remove_purge(
    clean_machine: None, deb: Path, mosquitto: Mosquitto
) -> None:
    started = time.monotonic()

    # Install: the shipped config validates, so the service is enabled.
    install = dpkg("-i", str(deb))
    assert install.returncode == 0, install.stdout + install.stderr
    assert "/etc/ccwatch/config.yaml: OK" in install.stdout
    assert os.readlink(ENABLED_LINK) == str(UNIT)

    version = run(["/usr/bin/ccwatch", "--version"])
    assert version.stdout.strip() == f"ccwatch, version {VERSION}", version
    assert Path("/usr/bin/ccwatch").resolve() == Path("/opt/venvs/ccwatch/bin/ccwatch")

    check = as_ccwatch("/usr/bin/ccwatch", "-c", "/etc/ccwatch/config.yaml", "check-config")
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout and "state /var/lib/ccwatch/state.db" in check.stdout

    # The installed daemon runs as the ccwatch user (the wheels' compiled parts load) and
    # gets ready against a broker: the production config, with a free port and own state.
    run_installed_daemon(mosquitto)

    # The production config is the repository's config.yaml through the generator.
    expected = deb.parent / "config.yaml"
    subprocess.run([sys.executable, str(REPO / "packaging" / "production_config.py"),
                    str(REPO / "config.yaml"), str(expected)], check=True)
    assert (CONF / "config.yaml").read_text() == expected.read_text()
    assert sorted(p.name for p in (CONF / "checklists").iterdir()) == sorted(
        p.name for p in (REPO / "checklists").glob("*.yaml"))
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "ccwatch"]).stdout
    assert "/etc/ccwatch/config.yaml" in conffiles
    assert "/etc/ccwatch/checklists/daily.yaml" in conffiles

    # Ownership: the config folder and secrets.env are the service's, no one else's.
    user = pwd.getpwnam("ccwatch")
    assert user.pw_dir == "/var/lib/ccwatch" and user.pw_shell.endswith("nologin")
    for path, mode in ((CONF, 0o750), (CONF / "secrets.env", 0o640)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, user.pw_gid, mode)
    assert (CONF / "secrets.env").read_text() == ""

    # The unit is the repository's, with the package's paths, and systemd accepts it.
    repo_unit = (REPO / "systemd" / "ccwatch.service").read_text().splitlines()
    installed_unit = UNIT.read_text().splitlines()
    assert installed_unit[1:] == [
        line.replace("/opt/ccwatch/bin/", "/opt/venvs/ccwatch/bin/") for line in repo_unit[1:]]
    verify = run(["systemd-analyze", "verify", str(UNIT)])
    assert verify.returncode == 0 and "ccwatch.service" not in verify.stderr, verify.stderr

    # Upgrade path: local edits to the config and the secrets survive a reinstall.
    config = (CONF / "config.yaml").read_text().replace("site: blr1\n", "site: test-edit\n")
    (CONF / "config.yaml").write_text(config)
    (CONF / "secrets.env").write_text("CCWATCH_TEST_SECRET=kept\n")
    upgrade = dpkg("-i", str(deb))
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "site: test-edit\n" in (CONF / "config.yaml").read_text()
    assert "OK, site test-edit" in upgrade.stdout
    assert (CONF / "secrets.env").read_text() == "CCWATCH_TEST_SECRET=kept\n"
    assert stat.S_IMODE((CONF / "secrets.env").stat().st_mode) == 0o640

    # An invalid edit does not fail the upgrade; the postinst says why it did not restart.
    (CONF / "config.yaml").write_text(config.replace("  qos: 1\n", "  qos: 7\n"))
    invalid = dpkg("-i", str(deb))
    assert invalid.returncode == 0, invalid.stdout + invalid.stderr
    assert "qos" in invalid.stderr and "does not validate" in invalid.stderr
    assert "was\nccwatch: not restarted" in invalid.stderr

    # Remove keeps the config, the state and the user; purge removes them.
    Path("/var/lib/ccwatch").mkdir(mode=0o750)
    Path("/var/lib/ccwatch/state.db").write_bytes(b"")
    remove = dpkg("--remove", "ccwatch")
    assert remove.returncode == 0, remove.stdout + remove.stderr
    assert not Path("/opt/venvs/ccwatch").exists() and not UNIT.exists()
    assert (CONF / "config.yaml").exists() and Path("/var/lib/ccwatch/state.db").exists()
    pwd.getpwnam("ccwatch")

    purge = dpkg("--purge", "ccwatch")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert [str(p) for p in LEFTOVERS if p.exists() or p.is_symlink()] == []
    with pytest.raises(KeyError):
        pwd.getpwnam("ccwatch")
    with pytest.raises(KeyError):
        grp.getgrnam("ccwatch")
    status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "ccwatch"]).stdout.strip()
    assert status in ("", "un"), status
    print(f"\ninstall, upgrade, remove and purge took {time.monotonic() - started:.0f}s")
