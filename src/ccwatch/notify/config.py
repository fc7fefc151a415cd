"""The SMTP relay (``email:`` in config.yaml), used by the checklist report and the
e-mail ticket upstream."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration


class EmailConfig(StrictModel):
    """The SMTP relay used for the checklist report and the e-mail ticket upstream."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    from_address: str = Field(alias="from")
    to: list[str] = Field(default_factory=list, description="default recipients (IT team)")
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password_env: SecretEnv = None
    password_file: SecretFile = None
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailConfig:
        if self.ssl and self.starttls:
            raise ValueError("choose either ssl (implicit TLS, port 465) or starttls, not both")
        return self
