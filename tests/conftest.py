"""Fixtures that start the real things the tests talk to.

- ``mosquitto``: a Mosquitto of the test's own on a free port (persistence on, so QoS 1
  sessions survive its restart); ``.stop()`` / ``.start()`` for fault tests.
- ``pg_database``: a PostgreSQL database created for the test and dropped after it.
- ``state_backend`` / ``open_store``: the tests of the state store and its users run once
  per backend (``sqlite``, ``postgresql``). ``open_store()`` opens the test's state
  database (a SQLite file in ``tmp_path``, or a fresh schema of one PostgreSQL database
  per test module, dropped after it); call it again to reopen the same database. The
  PostgreSQL variant is skipped, with the reason, when PostgreSQL is not reachable.
- ``daemon_factory``: starts ``ccwatch run`` as a subprocess on a config the test writes.
- ``rt_server`` (session, tests/rt.py): a Request Tracker 5 of the session's own, REST2 with tokens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.rt import rt_server  # noqa: F401  (fixture registration)

REPO_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_ADMIN_DSN = os.environ.get(
    "CCWATCH_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it or fail the test."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class Mosquitto:
    """A broker of the test's own. Persistent sessions survive ``stop()``/``start()``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_dest none\n"
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Mosquitto(workdir)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """DSN of a fresh PostgreSQL database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    name = f"ccwatch_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}")
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


STATE_BACKENDS = ("sqlite", "postgresql")


def _pg_admin() -> Any:
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")


@pytest.fixture(scope="module")
def pg_module_database() -> Iterator[str]:
    """DSN of a PostgreSQL database of the test module's own, dropped after it."""
    name = f"ccwatch_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}")
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_schema_dsn(pg_module_database: str) -> Iterator[str]:
    """DSN of a fresh, empty schema (first on the search path) in the module's database."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_module_database, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(pg_module_database, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(pg_module_database, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=STATE_BACKENDS)
def state_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def state_section(state_backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The config's ``state:`` section for the test's backend (the DSN in an env variable)."""
    if state_backend == "sqlite":
        return {"path": str(tmp_path / "state.db")}
    dsn: str = request.getfixturevalue("pg_schema_dsn")
    monkeypatch.setenv("CCWATCH_TEST_STATE_DSN", dsn)
    return {"backend": "postgresql", "dsn_env": "CCWATCH_TEST_STATE_DSN"}


@pytest.fixture
def open_store(state_backend: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Opens the test's state database with every feature's tables; see the docstring."""
    from ccwatch.compose import MIGRATIONS
    from ccwatch.state import SqliteStore

    opened: list[Any] = []
    dsn: str | None = None
    if state_backend == "postgresql":
        dsn = request.getfixturevalue("pg_schema_dsn")

    def open_(migrations: Any = MIGRATIONS) -> Any:
        if dsn is None:
            store: Any = SqliteStore.open(tmp_path / "state.db", migrations)
        else:
            from ccwatch.state.postgres import PostgresStore

            store = PostgresStore.open(dsn, migrations)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A minimal valid config for a daemon under test: own HTTP port, own state file."""
    config: dict[str, Any] = {
        "site": "blr1",
        "mqtt": {
            "host": "127.0.0.1",
            "port": 1,
            "client_id": f"ccwatch-test-{uuid.uuid4().hex[:8]}",
        },
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "state": {"path": str(tmp_path / "state.db")},
        "logging": {"level": "debug"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@dataclass
class DaemonProcess:
    """``ccwatch run`` as a subprocess, as systemd would start it."""

    config_path: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    listen: str = ""

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        return loaded

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write the config file; the address tests talk to follows a valid ``http.listen``."""
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        listen = config.get("http", {}).get("listen") if isinstance(config.get("http"), dict) else None
        if listen:
            self.listen = listen

    def start(self, wait: str | None = "/healthz", timeout: float = 15.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ccwatch.cli", "-c", str(self.config_path), "run"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=self.config_path.parent,
        )
        if wait:
            self.wait_http(wait, timeout)

    def wait_http(self, path: str, timeout: float = 15.0, status: int = 200) -> httpx.Response:
        def answered() -> httpx.Response | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"ccwatch exited with {self.process.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(self.base_url + path, timeout=1)
                if response.status_code == status:
                    return response
            return None

        result: httpx.Response = wait_until(answered, timeout=timeout)
        return result

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=5, **kwargs)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        start: bool = True,
        wait: str | None = "/healthz",
    ) -> DaemonProcess:
        workdir = tmp_path / f"daemon{len(started)}"
        workdir.mkdir()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("NOTIFY_SOCKET", None) if "NOTIFY_SOCKET" not in (env or {}) else None
        daemon = DaemonProcess(workdir / "config.yaml", full_env, workdir / "ccwatch.log")
        daemon.write_config(config)
        started.append(daemon)
        if start:
            daemon.start(wait=wait)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()
