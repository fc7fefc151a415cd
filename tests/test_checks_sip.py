"""``sip_options`` and ``reachability`` against real peers started here: a SIP OPTIONS
responder (asyncio UDP server answering as a SIP stack does), a TCP listener, a UDP echo
server, a silent UDP socket, and closed ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.checklists.checks import REGISTRY
from ccwatch.checklists.checks.sip_options import parse_response
from ccwatch.checklists.result import Outcome, Status
from tests.conftest import free_port
from tests.test_checklist_support import env, params


async def check(check_type: str, **values: Any) -> Outcome:
    outcome: Outcome = await REGISTRY[check_type].run(params(check_type, **values), env())
    return outcome


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def headers_of(request: bytes) -> dict[str, str]:
    lines = request.decode().split("\r\n\r\n")[0].split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


class SipResponder(asyncio.DatagramProtocol):
    """Answers OPTIONS as RFC 3261 8.2.6 says: Via, From, Call-ID, CSeq copied, a To tag.

    ``drop``: requests ignored first (the client must retransmit); ``before``: responses
    sent ahead of the final one, e.g. a 100 Trying or a stray answer of another call."""

    def __init__(
        self, code: int, reason: str, drop: int = 0, before: tuple[tuple[int, str, str], ...] = ()
    ) -> None:
        self.code, self.reason, self.drop, self.before = code, reason, drop, before
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def response(self, request: bytes, code: int, reason: str, call_id: str | None = None) -> bytes:
        h = headers_of(request)
        lines = [
            f"SIP/2.0 {code} {reason}",
            f"Via: {h['via']};received=127.0.0.1",
            f"From: {h['from']}",
            f"To: {h['to']};tag=as58f4201b",
            f"Call-ID: {call_id or h['call-id']}",
            f"CSeq: {h['cseq']}",
            "Server: test-pbx 1.0",
            "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        self.requests.append(data)
        if len(self.requests) <= self.drop:
            return
        for code, reason, call_id in self.before:
            self.transport.sendto(self.response(data, code, reason, call_id or None), addr)
        self.transport.sendto(self.response(data, self.code, self.reason), addr)


async def start_responder(responder: SipResponder) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: responder, local_addr=("127.0.0.1", 0)
    )
    return transport, int(transport.get_extra_info("sockname")[1])


def sip(responder: SipResponder, **values: Any) -> Outcome:
    async def scenario() -> Outcome:
        transport, port = await start_responder(responder)
        try:
            return await check("sip_options", host="127.0.0.1", port=port, **values)
        finally:
            transport.close()

    return asyncio.run(scenario())


# --- sip_options -----------------------------------------------------------------------


def test_sip_options_200_ok_passes_and_the_request_is_valid_sip() -> None:
    responder = SipResponder(200, "OK")
    outcome = sip(responder)
    assert outcome.status is Status.OK, outcome
    assert outcome.value.startswith(f"sip:127.0.0.1:{responder_port(responder)}: 200 OK in ")
    assert outcome.detail == "Server: test-pbx 1.0"
    (request,) = responder.requests
    first = request.decode().split("\r\n")[0]
    assert first == f"OPTIONS sip:127.0.0.1:{responder_port(responder)} SIP/2.0"
    h = headers_of(request)
    assert h["via"].startswith("SIP/2.0/UDP 127.0.0.1:")
    assert ";branch=z9hG4bK" in h["via"]  # RFC 3261 magic cookie
    assert h["cseq"] == "1 OPTIONS"
    assert h["max-forwards"] == "70"
    assert ";tag=" in h["from"]
    assert h["content-length"] == "0"
    assert request.endswith(b"\r\n\r\n")


def responder_port(responder: SipResponder) -> int:
    assert responder.transport is not None
    return int(responder.transport.get_extra_info("sockname")[1])


def test_sip_options_other_final_responses_warn_with_a_hint() -> None:
    unavailable = sip(SipResponder(503, "Service Unavailable"), service="the Airtel trunk")
    assert unavailable.status is Status.WARN
    assert ": 503 Service Unavailable in " in unavailable.value
    assert "the Airtel trunk is up but not ready for calls" in unavailable.hint
    auth = sip(SipResponder(407, "Proxy Authentication Required"))
    assert auth.status is Status.WARN
    assert "wants authentication" in auth.hint


def test_sip_options_waits_past_provisional_and_stray_responses() -> None:
    responder = SipResponder(
        200,
        "OK",
        before=(
            (503, "Service Unavailable", "another-call@10.0.0.9"),  # not our transaction
            (100, "Trying", ""),
        ),
    )
    outcome = sip(responder)
    assert outcome.status is Status.OK, outcome
    assert ": 200 OK in " in outcome.value


def test_sip_options_retransmits_a_lost_request() -> None:
    responder = SipResponder(200, "OK", drop=1)
    outcome = sip(responder, timeout="3s")
    assert outcome.status is Status.OK, outcome
    first, second = responder.requests
    assert first == second  # the same transaction (branch, Call-ID), as RFC 3261 17.1.2 says


def test_sip_options_fails_without_an_answer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        outcome = asyncio.run(check("sip_options", host="127.0.0.1", port=port, timeout="700ms"))
        assert silent.recv(65536).startswith(b"OPTIONS sip:")  # it was asked
    assert outcome.status is Status.FAIL
    assert outcome.value == f"sip:127.0.0.1:{port}: no answer"
    assert "firewall drops SIP" in outcome.hint


def test_sip_options_closed_port_fails_as_refused() -> None:
    port = free_udp_port()
    outcome = asyncio.run(check("sip_options", host="127.0.0.1", port=port, timeout="2s"))
    assert outcome.status is Status.FAIL
    assert outcome.value == f"sip:127.0.0.1:{port}: Connection refused"


def test_parse_response_reads_compact_headers_and_rejects_requests() -> None:
    response = parse_response(b"SIP/2.0 200 OK\r\ni: abc@h\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert response is not None
    assert (response.code, response.reason, response.headers["call-id"]) == (200, "OK", "abc@h")
    assert parse_response(b"OPTIONS sip:x SIP/2.0\r\n\r\n") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\n\r\n") is None


@given(st.binary(max_size=2000))
def test_parse_response_never_raises(data: bytes) -> None:
    response = parse_response(data)
    assert response is None or 100 <= response.code <= 699


# --- reachability ----------------------------------------------------------------------


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


def test_reachability_tcp_and_udp_targets(tcp_listener: int) -> None:
    closed_tcp, closed_udp = free_port(), free_udp_port()

    async def scenario() -> tuple[Outcome, Outcome, Outcome]:
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        echo_port = echo.get_extra_info("sockname")[1]
        try:
            healthy = await check(
                "reachability",
                timeout="2s",
                targets=[
                    {"name": "gateway", "host": "127.0.0.1", "port": tcp_listener},
                    {"host": "127.0.0.1", "port": echo_port, "protocol": "udp"},
                ],
            )
            broken = await check(
                "reachability",
                timeout="2s",
                targets=[
                    {"name": "gateway", "host": "127.0.0.1", "port": tcp_listener},
                    {"name": "trunk", "host": "127.0.0.1", "port": closed_tcp},
                    {"name": "PRI", "host": "127.0.0.1", "port": closed_udp, "protocol": "udp"},
                ],
            )
            unknown = await check(
                "reachability", targets=[{"host": "no-such-host.invalid", "port": 5060}]
            )
        finally:
            echo.close()
        return healthy, broken, unknown

    healthy, broken, unknown = asyncio.run(scenario())
    assert (healthy.status, healthy.value) == (Status.OK, "2 of 2 reachable")
    lines = healthy.detail.splitlines()
    assert lines[0].startswith(f"gateway (tcp/127.0.0.1:{tcp_listener}): ok: connected in ")
    assert "ok: replied (4 bytes) in " in lines[1]  # the CRLF CRLF probe came back
    assert broken.status is Status.FAIL
    assert broken.value == (
        f"2 of 3 unreachable: trunk (tcp/127.0.0.1:{closed_tcp}): Connection refused; "
        f"PRI (udp/127.0.0.1:{closed_udp}): Connection refused"
    )
    assert len(broken.detail.splitlines()) == 3
    assert unknown.status is Status.FAIL
    assert "1 of 1 unreachable: tcp/no-such-host.invalid:5060" in unknown.value


def test_reachability_silent_udp_passes_unless_a_reply_is_expected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        target = {"host": "127.0.0.1", "port": port, "protocol": "udp"}
        quiet = asyncio.run(check("reachability", timeout="300ms", targets=[target]))
        strict = asyncio.run(
            check("reachability", timeout="300ms", targets=[{**target, "expect_reply": True}])
        )
    assert quiet.status is Status.OK
    assert quiet.detail.endswith("ok: no reply (not refused)")
    assert strict.status is Status.FAIL
    assert strict.value == f"1 of 1 unreachable: udp/127.0.0.1:{port}: no reply"
