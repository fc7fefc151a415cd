"""``sip_options``: a SIP endpoint (trunk, gateway, the local SIP server) answers OPTIONS.

Sends one SIP OPTIONS request over UDP (RFC 3261 section 11, "Querying for
Capabilities") from a connected socket, retransmitted as a non-INVITE client transaction
does (timer E: 500 ms, doubling up to 4 s) until a final response or ``timeout``.
Provisional responses (100 Trying) are waited past; responses of another transaction
(Call-ID, CSeq) are ignored.

- ``200 OK``: pass;
- any other final response (401/407 wanting authentication, 403, 404, 503…): warn. The
  endpoint is reachable and speaks SIP, but does not say it is ready for us;
- no answer within ``timeout``, or an ICMP "port unreachable": fail.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, describe_os_error, udp_peer
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration
from ccwatch.redact import redact_then_cut

T1 = 0.5  # RFC 3261 17.1.2.2: first retransmission interval
T2 = 4.0  # longest retransmission interval
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?$")
# RFC 3261 7.3.3 compact header names.
_COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact"}


class SipOptionsParams(StrictModel):
    host: str = Field(min_length=1)
    port: int = Field(5060, ge=1, le=65535)
    uri: str | None = Field(None, description="Request-URI (default sip:<host>:<port>)")
    from_user: str = Field("ccwatch", pattern=r"^[A-Za-z0-9._~-]+$")
    timeout: Duration = Field(timedelta(seconds=3), description="wait for a final response")
    service: str | None = Field(None, description="what answers there, named in the hint")


@dataclass(frozen=True)
class SipResponse:
    code: int
    reason: str
    headers: dict[str, str]  # lower-case full names; the first of repeated headers

    @property
    def server(self) -> str:
        return self.headers.get("server") or self.headers.get("user-agent") or ""


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def build_request(
    uri: str, target: str, local: tuple[str, int], user: str, call_id: str, branch: str, tag: str
) -> bytes:
    """An OPTIONS request (RFC 3261 11.1) sent from ``local`` (address, port)."""
    host, port = _host_part(local[0]), local[1]
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f"To: <{target}>",
        f"From: <sip:{user}@{host}>;tag={tag}",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:{user}@{host}:{port}>",
        "Accept: application/sdp",
        "User-Agent: ccwatch",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(data: bytes) -> SipResponse | None:
    """The status and headers of a SIP response; None for anything else (never raises)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.replace("\r\n", "\n").split("\n")
    match = _STATUS_LINE.match(lines[0].strip())
    if match is None:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or line[:1] in (" ", "\t"):
            continue  # not a header, or a folded continuation (not needed here)
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), value.strip())
    return SipResponse(int(match.group(1)), (match.group(2) or "").strip(), headers)


def _belongs(response: SipResponse, call_id: str) -> bool:
    cseq = response.headers.get("cseq", "").split()
    return response.headers.get("call-id") == call_id and cseq[-1:] == ["OPTIONS"]


def _warn_hint(response: SipResponse, what: str) -> str:
    if response.code in (401, 407):
        return (
            f"{what} answers but wants authentication for OPTIONS: it is reachable; allow "
            "OPTIONS from this host without authentication to keep this check green"
        )
    if response.code == 404:
        return f"{what} does not know the Request-URI: set `uri:` to an address it serves"
    if response.code in (480, 503):
        return f"{what} is up but not ready for calls (overloaded, or its own upstream is down)"
    return f"{what} answers OPTIONS with an error: read its log"


async def exchange(
    params: SipOptionsParams, uri: str, target: str
) -> tuple[SipResponse | None, float]:
    """The final response to one OPTIONS (None: no answer) and the seconds it took.

    Raises OSError when the peer cannot be reached (ICMP unreachable, unknown host).
    """
    call_id = f"{uuid.uuid4().hex}@ccwatch"
    branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"  # the RFC 3261 magic cookie, then unique
    tag = uuid.uuid4().hex[:10]
    started = time.perf_counter()
    deadline = time.monotonic() + params.timeout.total_seconds()
    async with udp_peer(params.host, params.port) as peer:
        request = build_request(
            uri, target, peer.local_address, params.from_user, call_id, branch, tag
        )
        interval = T1
        while (remaining := deadline - time.monotonic()) > 0:
            peer.send(request)
            resend_at = time.monotonic() + min(interval, remaining)
            interval = min(interval * 2, T2)
            while (wait := resend_at - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(wait):
                        data = await peer.receive()
                except TimeoutError:
                    break
                response = parse_response(data)
                if response is None or not _belongs(response, call_id) or response.code < 200:
                    continue  # provisional, stray or not SIP: keep waiting
                return response, time.perf_counter() - started
    return None, time.perf_counter() - started


async def run(params: SipOptionsParams, env: CheckEnv) -> Outcome:
    target = f"sip:{_host_part(params.host)}:{params.port}"
    uri = params.uri or target
    what = params.service or f"the SIP endpoint {params.host}:{params.port}"
    threshold = f"200 OK within {format_duration(params.timeout)}"
    try:
        response, seconds = await exchange(params, uri, target)
    except OSError as exc:
        return Outcome(
            Status.FAIL,
            f"{uri}: {describe_os_error(exc)}",
            threshold,
            f"nothing takes SIP on udp/{params.host}:{params.port}: start {what} or fix the "
            "address",
        )
    if response is None:
        return Outcome(
            Status.FAIL,
            f"{uri}: no answer",
            threshold,
            f"{what} is down or a firewall drops SIP (udp/{params.port}) between it and this host",
        )
    value = f"{uri}: {response.code} {response.reason} in {seconds * 1000:.1f} ms".replace(
        "  ", " "
    )
    detail = f"Server: {redact_then_cut(response.server, 120)}" if response.server else ""
    if response.code == 200:
        return Outcome(Status.OK, value, threshold, detail=detail)
    return Outcome(Status.WARN, value, threshold, _warn_hint(response, what), detail)


CHECK = CheckType(
    "sip_options", SipOptionsParams, run, "a SIP endpoint answers OPTIONS (200 OK) over UDP"
)
