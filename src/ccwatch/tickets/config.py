"""Config models of the ticket upstreams (``tickets:`` in config.yaml), one per adapter type.

The models live together here (not in their adapter modules) so that loading the config
imports no HTTP or SMTP client; ``ccwatch.tickets.adapters.ADAPTERS`` maps each ``type``
to the adapter class that takes the model.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration
from ccwatch.severity import Severity, SeverityName


class UpstreamBase(StrictModel):
    """What every upstream has: a name, an on/off switch and its routing."""

    enabled: bool = True  # first, so that secret checks can skip a disabled example
    name: str | None = Field(None, description="defaults to the type; must be unique")
    severities: list[SeverityName] = Field(
        default_factory=lambda: [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL],
        description="which incident severities this upstream receives",
    )
    components: dict[str, list[SeverityName]] = Field(
        default_factory=dict,
        description="per-component override of `severities` (an empty list mutes a component)",
    )
    timeout: Duration = timedelta(seconds=10)
    retry_max: Duration = Field(
        timedelta(minutes=5), description="cap of the exponential retry backoff"
    )

    @property
    def upstream_name(self) -> str:
        return self.name or str(getattr(self, "type", "upstream"))

    def wants(self, component: str, severity: Severity) -> bool:
        """Whether an incident of this component and severity is routed here."""
        return severity in self.components.get(component, self.severities)


class WebhookUpstream(UpstreamBase):
    type: Literal["webhook"]
    url: AnyHttpUrl
    secret_env: SecretEnv = None
    secret_file: SecretFile = None
    bearer_token_env: SecretEnv = Field(None, description="sent as Authorization: Bearer")
    bearer_token_file: SecretFile = None
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    ca_file: Path | None = None


class PagerDutyUpstream(UpstreamBase):
    type: Literal["pagerduty"]
    url: AnyHttpUrl = AnyHttpUrl("https://events.pagerduty.com/v2/enqueue")
    routing_key_env: SecretEnv = None
    routing_key_file: SecretFile = None
    source: str | None = Field(None, description="payload.source; defaults to the site name")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _needs_routing_key(self) -> PagerDutyUpstream:
        if self.enabled and not (self.routing_key_env or self.routing_key_file):
            raise ValueError("a pagerduty upstream needs routing_key_env or routing_key_file")
        return self


class AlertmanagerUpstream(UpstreamBase):
    type: Literal["alertmanager"]
    url: AnyHttpUrl = Field(description="base URL, e.g. http://127.0.0.1:9093")
    resend_interval: Duration = Field(
        timedelta(minutes=1),
        description="re-send firing alerts this often (keep < resolve_timeout)",
    )
    alertname: str = "CcwatchIncident"
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels")
    verify_tls: bool = True


class EmailUpstream(UpstreamBase):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="support mailbox(es), e.g. the P1 address")
    cc: list[str] = Field(default_factory=list)
    subject_prefix: str = "ccwatch"


TicketUpstream = Annotated[
    WebhookUpstream | PagerDutyUpstream | AlertmanagerUpstream | EmailUpstream,
    Field(discriminator="type"),
]
