"""Sending e-mail through the configured SMTP relay (aiosmtplib).

Used by the daily checklist report and the e-mail ticket upstream. Errors are wrapped:
a refused or unreachable relay raises ``TemporaryUpstreamError`` (retry later), a
rejected recipient or failed login ``PermanentUpstreamError``.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

from ccwatch.configbase import read_secret
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.notify.config import EmailConfig


async def send_email(
    config: EmailConfig, message: EmailMessage, tls_context: ssl.SSLContext | None = None
) -> None:
    """Send ``message`` (From defaults to ``email.from``; To must be set by the caller)."""
    if "From" not in message:
        message["From"] = config.from_address
    # Deferred: most runs of the daemon send no mail, and the SMTP client is not small.
    import aiosmtplib

    password = read_secret(config.password_env, config.password_file)
    try:
        await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            use_tls=config.ssl,
            start_tls=config.starttls,
            username=config.username,
            password=password if config.username else None,
            timeout=config.timeout.total_seconds(),
            tls_context=tls_context,
        )
    except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPRecipientsRefused) as exc:
        raise PermanentUpstreamError(f"SMTP {config.host}:{config.port} refused: {exc}") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise TemporaryUpstreamError(f"SMTP {config.host}:{config.port} failed: {exc}") from exc
