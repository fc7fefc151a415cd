"""A real Request Tracker 5 for the tests: the session fixture ``rt_server``.

Debian's ``request-tracker5``, ``rt5-db-sqlite`` and ``rt5-standalone`` (``make test-deps``
installs them) run on a site config and a SQLite file of the session's own, on
127.0.0.1:<free port>; the system's RT config in /etc is never read nor written. Absent
packages, or an RT that does not come up, skip the tests that use it, with the reason.

How RT is run (verified in RT 5.0.3's ``RT::Config::LoadConfig``)
-----------------------------------------------------------------
- ``RT_SITE_CONFIG=<dir>/RT_SiteConfig.pm`` replaces ``/etc/request-tracker5/RT_SiteConfig.pm``
  and ``RT_SITE_CONFIG_DIR=<empty dir>`` replaces both ``RT_SiteConfig.d`` folders (the
  Debian snippets in /etc: database, logging, web path). The site config also moves
  ``$RT::VarPath``, ``$RT::MasonDataDir`` and ``$RT::MasonSessionDir`` into the session's
  folder, so RT writes nothing outside it and runs as any user.
- ``$MailCommand = 'mbox'``: RT's outgoing mail (auto-replies, notifications) is written to
  ``<workdir>/var/*.mbox``, never sent. ``$BcryptCost = 4``: token checks in microseconds
  instead of ~0.2 s per request (test-only; RT's default is 12).
- Template database (built once, then reused from pytest's cache,
  ``.pytest_cache/d/ccwatch-rt5/<key>``; the key hashes RT's version and this file's
  set-up text): ``rt-setup-database-5 --action init --skip-create`` (RT's own initialdata,
  random root password), then ``--action insert --datafile`` of ``INITIALDATA`` below:
  queue ``ccwatch``, privileged users ``ccwatch`` and ``vendor``, ticket custom field
  ``ccwatch_dedup_key`` (FreeformSingle, applied to the queue), rights on the queue, and an
  auth token for ``root``, ``ccwatch`` and ``vendor`` (``RT::AuthToken->Create``; format
  ``1-<user id>-<32 hex>``). Each session copies the file.
- Server: ``/usr/share/request-tracker5/libexec/rt-server --server Starlet --host 127.0.0.1
  --port N --max-workers 2`` in its own process group; ``stop()`` sends SIGTERM (never
  SIGINT: Debian's rt-server then runs ``chown -R www-data /var/lib/request-tracker5`` when
  root). Ready when ``GET /REST/2.0/rt`` answers 200.

REST2 as ccwatch will use it (seen on RT 5.0.3; tests/test_rt_server.py asserts the flow)
-----------------------------------------------------------------------------------------
Auth: header ``Authorization: token <TOKEN>`` on every request. ``<rest2>`` is
``http://127.0.0.1:<port>/REST/2.0``. Bodies are JSON (``Content-Type: application/json``);
Starlet closes the connection after each response. Dates are ``2026-12-01T17:12:28Z``
(UTC); unset dates are ``1970-01-01T00:00:00Z``. Ids in links are strings (``"id": "1"``),
the ``id`` of a fetched record is a number.

Create: ``POST <rest2>/ticket``::

    {"Queue": "ccwatch", "Subject": "[ccwatch blr1] acd: critical",
     "Requestor": "ccwatch@ccwatch.test",            # optional; RT does NOT default it to the creator
     "Content": "...", "ContentType": "text/plain",
     "CustomFields": {"ccwatch_dedup_key": "blr1-acd-42"}}
    -> 201 {"id": "7", "type": "ticket", "_url": "<rest2>/ticket/7"}

  RT enforces no uniqueness on the custom field: look the key up before creating.

Search (idempotency): ``GET <rest2>/tickets?query=<TicketSQL>&fields=Subject,Status,CustomFields``
with ``query=Queue = 'ccwatch' AND 'CF.{ccwatch_dedup_key}' = 'blr1-acd-42'`` (URL-encoded;
``CF.{name}`` unquoted works too; ``orderby=id``, ``per_page`` up to 100)::

    -> 200 {"count": 1, "total": 1, "page": 1, "pages": 1, "per_page": 20,
            "items": [{"id": "7", "type": "ticket", "_url": ..., "Subject": ..., "Status": "new",
                       "CustomFields": [{"id": "2", "name": "ccwatch_dedup_key",
                                         "values": ["blr1-acd-42"], "type": "customfield", "_url": ...}]}]}
    no match -> 200 {"count": 0, "total": 0, "pages": 0.0 (sic, a float), "items": [], ...}

Read: ``GET <rest2>/ticket/7`` -> 200, header ``ETag: "39"``; body ``Status``, ``Subject``,
``Queue`` / ``Owner`` / ``Creator`` as ``{"id": "<name or id>", "type", "_url"}``,
``Requestor: [{"id": "ccwatch", ...}]`` (the user name when the address is a user's, else
the address), ``CustomFields`` as in the search,
``_hyperlinks`` (refs ``history``, ``correspond``, ``comment``, ``lifecycle``; present only
if the token's user has the right).

Reply (vendor) / comment (ccwatch): ``POST <rest2>/ticket/7/correspond`` or ``.../comment``
``{"Content": "...", "ContentType": "text/plain"}`` (optional ``"Subject"``, ``"Status"``,
``"CustomFields"``) -> 201 ``["Correspondence added"]`` / ``["Comments added"]``; with
``"Status": "resolved"`` -> 201 ``["Comments added", "Status changed from 'stalled' to 'resolved'"]``.
A comment is internal (no mail to the requestor); a correspondence is mailed.

Status / fields: ``PUT <rest2>/ticket/7`` ``{"Status": "stalled"}`` ->
200 ``["Ticket 7: Status changed from 'open' to 'stalled'"]``; unchanged -> 200 ``[]``.
An invalid value is NOT an HTTP error: ``{"Status": "bogus"}`` -> 200
``["Ticket 7: Status 'bogus' isn't a valid status for this ticket."]`` and nothing changes;
read the ticket back (or compare the messages) to know. ``If-Match: "<etag>"`` with a stale
ETag -> 412 ``{"message": "Precondition Failed"}``. Default lifecycle statuses: new, open,
stalled, resolved, rejected, deleted. A correspondence on a ``new``, ``resolved`` or
``rejected`` ticket re-opens it (RT's scrip "On Correspond Open Inactive Tickets"; that
Status transaction's Creator is ``RT_System``); a ``stalled`` ticket stays stalled.

History: ``GET <rest2>/ticket/7/history?fields=Type,Creator,Created,Field,OldValue,NewValue,Data&per_page=100``
-> 200 ``{"count": n, "total": null, "pages": null, "items": [...]}`` in id order, items
``{"id": "40", "Type": "Correspond", "Creator": {"id": "vendor", ...}, "Created": ...,
"Field": "", "OldValue": "", "NewValue": "", "Data": "No Subject"}``. Types seen: ``Create``
(ccwatch; a custom field set on create adds no transaction), ``EmailRecord`` (an auto-reply or notification,
Creator ``RT_System``; listed only with the right ShowOutgoingEmail, which the fixture grants
to ccwatch; without it the item is left out and ``GET /transaction/<id>`` is 403),
``Correspond``, ``Comment``, ``Status`` (Field ``Status``, Old/NewValue), ``Set`` (Field
``Subject`` ...). **The vendor's first reply** is the first ``Type == "Correspond"`` whose
``Creator.id`` is neither ccwatch's user nor ``RT_System``; ccwatch's own comments are
``Comment`` by ccwatch, auto-replies ``EmailRecord`` by ``RT_System``. The same directly,
with TransactionSQL: ``GET <rest2>/transactions?query=ObjectType = 'RT::Ticket' AND ObjectId =
7 AND Type = 'Correspond' AND Creator != 'ccwatch'&orderby=id&fields=Creator,Created``.
Text of a transaction: ``GET <rest2>/transaction/40/attachments?fields=ContentType,Content``
gives ``Content`` as text; ``GET <rest2>/attachment/<id>`` gives it base64-encoded.

Errors (JSON ``{"message": ...}``): no/bad token -> 401 ``{"message": "Unauthorized"}``;
unknown ticket -> 404 ``{"message": "Not Found"}``; malformed JSON -> 400 ``{"message":
"JSON parse error: malformed JSON string, ..."}``; bad TicketSQL -> 400 ``{"message":
"Incomplete query, ..."}``, ``{"message": "Unknown field: Bogus at ..."}``; create in a queue
without CreateTicket (or unknown) -> 403 ``{"message": "No permission to create tickets in
the queue 'General'"}``; a transaction one may not see -> 403 ``{"message": "Forbidden"}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

RT_LIB = Path("/usr/share/request-tracker5/lib")
RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
RT_SETUP_DATABASE = Path("/usr/sbin/rt-setup-database-5")
QUEUE = "ccwatch"
DEDUP_FIELD = "ccwatch_dedup_key"
CCWATCH_USER = "ccwatch"
VENDOR_USER = "vendor"
START_TIMEOUT = 60.0

# Perl, read by RT's rt-setup-database (docs: /usr/share/doc/request-tracker5/initialdata.pod.gz).
INITIALDATA = r"""
use strict;
use warnings;

our @Users = (
    { Name => 'ccwatch', RealName => 'ccwatch monitoring', EmailAddress => 'ccwatch@ccwatch.test',
      Privileged => 1 },
    { Name => 'vendor', RealName => 'Vendor Support', EmailAddress => 'support@vendor.test',
      Privileged => 1 },
);
our @Queues = (
    { Name => 'ccwatch', Description => 'incidents raised by ccwatch',
      CorrespondAddress => 'ccwatch@rt.ccwatch.test',
      CommentAddress => 'ccwatch-comment@rt.ccwatch.test' },
);
our @CustomFields = (
    { Name => 'ccwatch_dedup_key', Type => 'FreeformSingle', LookupType => 'RT::Queue-RT::Ticket',
      ApplyTo => 'ccwatch', Description => 'idempotency key of the ccwatch incident' },
);
our @ACL;
for my $user (qw(ccwatch vendor)) {
    push @ACL, { UserId => $user, Queue => 'ccwatch', Right => [qw(
        SeeQueue ShowTicket CreateTicket ModifyTicket ReplyToTicket CommentOnTicket
        ShowTicketComments OwnTicket TakeTicket Watch
        SeeCustomField ModifyCustomField SetInitialCustomField)] };
}
# Lets ccwatch's history list the auto-replies (EmailRecord), so tests see them told apart.
push @ACL, { UserId => 'ccwatch', Queue => 'ccwatch', Right => 'ShowOutgoingEmail' };

our @Final = (sub {
    my $file = $ENV{CCWATCH_RT_TOKENS_FILE} or die "CCWATCH_RT_TOKENS_FILE is not set\n";
    open my $out, '>', $file or die "$file: $!\n";
    for my $name (qw(root ccwatch vendor)) {
        my $user = RT::User->new(RT->SystemUser);
        $user->Load($name);
        die "no user $name\n" unless $user->id;
        my ($id, $msg, $token) = RT::AuthToken->new(RT->SystemUser)->Create(
            Owner => $user->id, Description => 'ccwatch test suite');
        die "token for $name: $msg\n" unless $id;
        print $out "$name $token\n";
    }
    close $out or die "$file: $!\n";
});
1;
"""

SITE_CONFIG = r"""
Set($rtname, 'ccwatch-test');
Set($Organization, 'ccwatch.test');
Set($CorrespondAddress, 'rt@ccwatch.test');
Set($CommentAddress, 'rt-comment@ccwatch.test');
Set($Timezone, 'UTC');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{workdir}/rt.db');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebPath, '');
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($LogToSTDERR, 'warning');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($MailCommand, 'mbox');
Set($BcryptCost, 4);
$RT::VarPath = '{workdir}/var';
$RT::MasonDataDir = '{workdir}/mason';
$RT::MasonSessionDir = '{workdir}/session';
1;
"""


def rt_missing() -> str | None:
    """Why RT cannot run here, or None."""
    for path in (RT_SERVER, RT_SETUP_DATABASE, RT_LIB / "RT" / "REST2.pm"):
        if not path.exists():
            return (
                f"Request Tracker 5 is not installed ({path} missing; `make test-deps` installs "
                "request-tracker5 rt5-db-sqlite rt5-standalone)"
            )
    probe = subprocess.run(
        ["perl", "-MDBD::SQLite", "-MPlack::Handler::Starlet", "-e1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"RT's Perl modules are missing: {probe.stderr.strip()[:300]}"
    return None


def _prepare_workdir(workdir: Path, port: int) -> dict[str, str]:
    """Site config of the instance in ``workdir``; returns the environment RT runs in."""
    for sub in ("var", "mason", "session", "RT_SiteConfig.d"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    text = SITE_CONFIG.replace("{workdir}", str(workdir)).replace("{port}", str(port))
    (workdir / "RT_SiteConfig.pm").write_text(text)
    return {
        **os.environ,
        "RT_SITE_CONFIG": str(workdir / "RT_SiteConfig.pm"),
        "RT_SITE_CONFIG_DIR": str(workdir / "RT_SiteConfig.d"),  # empty: no /etc snippets
    }


def _template_key() -> str:
    digest = hashlib.sha256()
    digest.update((RT_LIB / "RT" / "Generated.pm").read_bytes())  # RT's version and paths
    digest.update(INITIALDATA.encode())
    digest.update(SITE_CONFIG.encode())
    return digest.hexdigest()[:16]


def _run(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n{tail}")


def build_template(cache_dir: Path) -> Path:
    """The initialised database and its tokens, built once per RT version and set-up text."""
    target = cache_dir / f"rt5-{_template_key()}"
    if (target / "rt.db").exists() and (target / "tokens").exists():
        return target
    building = cache_dir / f"{target.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    building.mkdir(parents=True)
    try:
        env = _prepare_workdir(building, 1)
        password_file = building / "root-password"
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        (building / "initialdata.pl").write_text(INITIALDATA)
        env["CCWATCH_RT_TOKENS_FILE"] = str(building / "tokens")
        log = building / "setup.log"
        _run(
            [
                str(RT_SETUP_DATABASE),
                "--action",
                "init",
                "--skip-create",
                "--root-password-file",
                str(password_file),
            ],
            env,
            log,
        )
        _run(
            [
                str(RT_SETUP_DATABASE),
                "--action",
                "insert",
                "--datafile",
                str(building / "initialdata.pl"),
            ],
            env,
            log,
        )
        password_file.unlink()
        (building / "tokens").chmod(0o600)
        try:
            building.rename(target)
        except OSError:  # another session built it meanwhile
            if not (target / "rt.db").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


@dataclass
class RTServer:
    """An RT 5 of the test session's own. Tokens stay out of ``repr``."""

    workdir: Path
    template: Path
    port: int
    ccwatch_token: str = field(repr=False)
    vendor_token: str = field(repr=False)
    admin_token: str = field(repr=False)  # RT's root user (SuperUser)
    queue: str = QUEUE
    dedup_field: str = DEDUP_FIELD
    ccwatch_user: str = CCWATCH_USER
    vendor_user: str = VENDOR_USER
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_in: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest2(self) -> str:
        return f"{self.base_url}/REST/2.0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "rt-server.log"

    def token(self, user: str) -> str:
        return {
            CCWATCH_USER: self.ccwatch_token,
            VENDOR_USER: self.vendor_token,
            "root": self.admin_token,
        }[user]

    def rest(
        self,
        method: str,
        path: str,
        *,
        user: str = CCWATCH_USER,
        token: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One REST2 call: ``path`` relative to /REST/2.0 (or a full ``_url``), as ``user``."""
        url = path if path.startswith("http") else f"{self.rest2}/{path.lstrip('/')}"
        headers = {
            "Authorization": f"token {token or self.token(user)}",
            **kwargs.pop("headers", {}),
        }
        return httpx.request(method, url, headers=headers, timeout=30, **kwargs)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        from tests.conftest import wait_until

        begun = time.monotonic()
        env = _prepare_workdir(self.workdir, self.port)
        if not (self.workdir / "rt.db").exists():
            shutil.copyfile(self.template / "rt.db", self.workdir / "rt.db")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(RT_SERVER),
                    "--server",
                    "Starlet",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--max-workers",
                    "2",
                ],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # no terminal SIGINT; stop() ends the whole group
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"rt-server exited with {self.process.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                return self.rest("GET", "rt", user="root").status_code == 200
            return False

        try:
            wait_until(ready, timeout=timeout, interval=0.1)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"rt-server not ready after {timeout}s:\n{self.log()}") from exc
        self.started_in = time.monotonic() - begun

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGTERM: Starlet's master stops its workers. Never SIGINT (see module doc).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def _read_tokens(template: Path) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in (template / "tokens").read_text().splitlines() if line)
    return {name: token for name, token in pairs}


@pytest.fixture(scope="session")
def rt_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RTServer]:
    """RT 5 on 127.0.0.1:<free port>, fresh SQLite database; shared by the session, so
    tests create their own tickets and search by keys of their own."""
    from tests.conftest import free_port

    reason = rt_missing()
    if reason:
        pytest.skip(reason)
    cache = getattr(request.config, "cache", None)
    cache_dir = cache.mkdir("ccwatch-rt5") if cache is not None else tmp_path_factory.mktemp("rt5")
    begun = time.monotonic()
    try:
        template = build_template(Path(cache_dir))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"RT's database could not be initialised: {exc}")
    built_in = time.monotonic() - begun
    tokens = _read_tokens(template)
    server = RTServer(
        workdir=tmp_path_factory.mktemp("rt"),
        template=template,
        port=free_port(),
        ccwatch_token=tokens[CCWATCH_USER],
        vendor_token=tokens[VENDOR_USER],
        admin_token=tokens["root"],
    )
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"RT could not start: {exc}")
    print(
        f"\nrt_server: template {built_in:.1f} s, start {server.started_in:.1f} s, {server.base_url}"
    )
    yield server
    server.stop()
