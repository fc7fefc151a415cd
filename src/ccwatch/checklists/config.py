"""Where the checklist definitions live (``checklists:`` in config.yaml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ccwatch.configbase import StrictModel


class ChecklistsConfig(StrictModel):
    dir: Path = Field(Path("checklists"), description="folder of checklist YAML files")
