"""The ``inbound:`` section: who may push changes to ccwatch, and with which secret.

```yaml
inbound:
  - name: pagerduty            # POST /api/inbound/pagerduty
    type: pagerduty            # PagerDuty webhooks v3: X-PagerDuty-Signature
    secret_env: CCWATCH_PD_WEBHOOK_SECRET
  - name: vendor-desk          # POST /api/inbound/vendor-desk
    type: signed               # X-Ccwatch-Timestamp + X-Ccwatch-Signature (HMAC-SHA256)
    secret_file: /etc/ccwatch/vendor-desk.secret
```
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration


class InboundSource(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the URL's last part")
    type: Literal["pagerduty", "signed"]
    secret_env: SecretEnv = Field(None, description="the shared signing secret")
    secret_file: SecretFile = None
    tolerance: Duration = Field(
        timedelta(minutes=5),
        description="signed: how far X-Ccwatch-Timestamp may be from now (replays older "
        "than this are refused)",
    )

    @model_validator(mode="after")
    def _has_a_secret(self) -> InboundSource:
        if not (self.secret_env or self.secret_file):
            raise ValueError(
                "an inbound source needs its signing secret: secret_env or secret_file "
                "(unsigned requests are always refused)"
            )
        return self


def unique_names(sources: list[InboundSource]) -> list[InboundSource]:
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"inbound source names must be unique: {', '.join(duplicates)}")
    return sources
