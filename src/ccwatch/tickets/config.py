"""Config models of the ticket upstreams (``tickets:`` in config.yaml), one per adapter type."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, field_validator

from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration
from ccwatch.severity import Severity


class UpstreamBase(StrictModel):
    """What every upstream has: a name, an on/off switch and its routing."""

    enabled: bool = True  # first, so that secret checks can skip a disabled example
    name: str | None = Field(None, description="defaults to the type; must be unique")
    severities: list[Severity] = Field(
        default_factory=lambda: [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL],
        description="which incident severities this upstream receives",
    )
    components: dict[str, list[Severity]] = Field(
        default_factory=dict,
        description="per-component override of `severities` (an empty list mutes a component)",
    )
    timeout: Duration = timedelta(seconds=10)

    @field_validator("severities", mode="before")
    @classmethod
    def _parse_severities(cls, value: object) -> object:
        if isinstance(value, list):
            return [Severity.parse(item) for item in value]
        return value

    @field_validator("components", mode="before")
    @classmethod
    def _parse_component_severities(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                key: [Severity.parse(item) for item in items] if isinstance(items, list) else items
                for key, items in value.items()
            }
        return value

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
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    ca_file: Path | None = None


class PagerDutyUpstream(UpstreamBase):
    type: Literal["pagerduty"]
    url: AnyHttpUrl = AnyHttpUrl("https://events.pagerduty.com/v2/enqueue")
    routing_key_env: SecretEnv = None
    routing_key_file: SecretFile = None
    verify_tls: bool = True


class AlertmanagerUpstream(UpstreamBase):
    type: Literal["alertmanager"]
    url: AnyHttpUrl = Field(description="base URL, e.g. http://127.0.0.1:9093")
    resend_interval: Duration = timedelta(minutes=1)
    verify_tls: bool = True


class EmailUpstream(UpstreamBase):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="support mailbox(es), e.g. the P1 address")
    cc: list[str] = Field(default_factory=list)


TicketUpstream = Annotated[
    WebhookUpstream | PagerDutyUpstream | AlertmanagerUpstream | EmailUpstream,
    Field(discriminator="type"),
]
