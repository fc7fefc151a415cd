"""``certificate``: days until a TLS certificate expires, read from a PEM file or from
what a ``host:port`` serves.

The expiry is read from the certificate's DER encoding directly (a few lines of ASN.1
walking, below), so ccwatch needs no crypto library. The served certificate is fetched
without verification: an internal CA or a self-signed certificate must still be checked.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field, model_validator

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    describe_os_error,
    grade_low,
    run_blocking,
    thresholds,
)
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


class CertificateParams(StrictModel):
    file: Path | None = Field(None, description="PEM file; the first certificate is checked")
    host: str | None = None
    port: int = Field(443, ge=1, le=65535)
    server_name: str | None = Field(None, description="SNI name, default the host")
    warn_days: float | None = Field(30, ge=0)
    fail_days: float | None = Field(7, ge=0)
    connect_timeout: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _one_source(self) -> CertificateParams:
        if (self.file is None) == (self.host is None):
            raise ValueError("give either `file` (a PEM file) or `host` (with `port`)")
        return self


def _element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def not_after(der: bytes) -> datetime:
    """The ``notAfter`` time of an X.509 certificate (RFC 5280 §4.1); ValueError if malformed."""
    tag, certificate, _ = _element(der, 0)
    tag_tbs, position, _ = _element(der, certificate)
    if tag != 0x30 or tag_tbs != 0x30:
        raise ValueError("not an X.509 certificate")
    tag, _, end = _element(der, position)
    if tag == 0xA0:  # explicit version
        position = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, position = _element(der, position)
    tag, validity, _ = _element(der, position)
    if tag != 0x30:
        raise ValueError("no validity in certificate")
    _, _, after = _element(der, validity)  # skip notBefore
    tag, start, end = _element(der, after)
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 50-99 are 19xx (RFC 5280)
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError("unknown time encoding in certificate")
    return parsed.replace(tzinfo=UTC)


def first_pem_certificate(data: bytes) -> bytes:
    found = _PEM.search(data)
    if found is None:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")
    return base64.b64decode(b"".join(found.group(1).split()))


async def _served_certificate(params: CertificateParams) -> bytes:
    assert params.host is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA store to load: nothing verified
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read the expiry of any certificate, trusted or not
    async with asyncio.timeout(params.connect_timeout.total_seconds()):
        _, writer = await asyncio.open_connection(
            params.host, params.port, ssl=context, server_hostname=params.server_name or params.host
        )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der: bytes | None = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    finally:
        writer.close()
    if not der:
        raise ValueError("the server sent no certificate")
    return der


async def run(params: CertificateParams, env: CheckEnv) -> Outcome:
    threshold = thresholds(" days left", params.warn_days, params.fail_days, "below")
    source = str(params.file) if params.file else f"{params.host}:{params.port}"
    try:
        if params.file is not None:
            der = first_pem_certificate(await run_blocking(params.file.read_bytes))
        else:
            der = await _served_certificate(params)
        expires = not_after(der)
    except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
        reason = describe_os_error(exc)
        return Outcome(
            Status.FAIL,
            f"{source}: cannot read the certificate: {reason}",
            threshold,
            "check the path or that the TLS service is up",
        )
    days = (expires.timestamp() - env.clock()) / 86400
    status = grade_low(days, params.warn_days, params.fail_days)
    verb = "expires" if days >= 0 else "expired"
    return Outcome(
        status,
        f"{source} {verb} {expires:%Y-%m-%d} ({days:.0f} days {'left' if days >= 0 else 'ago'})",
        threshold,
        f"renew the certificate of {source} and reload the service that uses it",
    )


CHECK = CheckType("certificate", CertificateParams, run, "days until a TLS certificate expires")
