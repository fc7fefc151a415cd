"""The one exception tree of ccwatch.

Third-party errors are wrapped where they enter ccwatch (``raise X(...) from exc``),
so callers catch these and nothing else::

    CcwatchError
    ├── ConfigError            the config (or a checklist file) is invalid; lists every problem
    ├── StateStoreError        the state database cannot be opened, migrated or written
    ├── PayloadError           an MQTT payload is rejected; carries a ``reason`` label
    ├── UpstreamError          a ticket upstream did not take an event
    │   ├── TemporaryUpstreamError   retry later (timeouts, 408, 429, 5xx, TLS/connection)
    │   └── PermanentUpstreamError   dead-letter it (other 4xx, a body the API refuses)
    ├── CheckError             a checklist check could not run (not the same as failing)
    ├── RetentionError         a retention run cannot start or had to stop
    └── LeaseLostError         this worker no longer holds a site's lease (fleet): stop the site
"""

from __future__ import annotations

from collections.abc import Sequence


class CcwatchError(Exception):
    """Base of every error ccwatch raises on purpose."""


class ConfigError(CcwatchError):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n" + "\n".join(self.problems))


class StateStoreError(CcwatchError):
    """The state database cannot be opened, migrated or written."""


class PayloadError(CcwatchError):
    """An MQTT message was rejected; ``reason`` is the metric label it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class UpstreamError(CcwatchError):
    """A ticket upstream did not accept an event."""


class TemporaryUpstreamError(UpstreamError):
    """Worth retrying; ``retry_after`` (seconds) is honoured when the upstream sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class PermanentUpstreamError(UpstreamError):
    """Retrying cannot help; the event goes to the dead-letter state with this reason."""


class CheckError(CcwatchError):
    """A checklist check could not be carried out."""


class RetentionError(CcwatchError):
    """A retention run cannot start (bad table, unreachable database) or had to stop."""


class LeaseLostError(CcwatchError):
    """This worker no longer holds the lease of ``site`` at ``epoch`` (several workers,
    ``sites:``): another worker took the site, or the lease ran out before it was renewed.
    A write or a delivery that meets it is refused whole (its transaction rolls back) and
    the site stops here; it is never retried as if nothing happened."""

    def __init__(self, site: str, epoch: int, why: str) -> None:
        self.site = site
        self.epoch = epoch
        self.why = why
        super().__init__(f"site {site}: lease epoch {epoch} lost ({why})")
