"""The checklists section: where the checklist files live (``checklists:`` in
config.yaml) and, once ``load_config`` has read them, the validated checklists.

The checklist model (``checklists.definition``, with every check type) is imported when
there is a file to validate: a config without checklists does not load the check types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from ccwatch.configbase import StrictModel
from ccwatch.retention.config import RetentionConfig

if TYPE_CHECKING:
    from ccwatch.checklists.definition import Checklist
    from ccwatch.settings import ComponentConfig, MqttConfig

    Checklists = tuple[Checklist, ...]
else:
    # The files are validated one by one by ``load_checklists``, never by this model (a
    # config.yaml cannot write ``definitions``): the root config's schema need not carry
    # the checklist model and every check type's.
    Checklists = tuple[Any, ...]


@dataclass(frozen=True)
class CheckSettings:
    """What checks may read of config.yaml besides their own parameters: the site, the
    broker (mqtt_freshness, agent_capacity), the component names, each component's
    settings (``processes``, ``seats``: component_processes, agent_capacity) and the
    retention databases. (Here, not with the checks: a daemon builds it at start, and
    loads the check types only with a checklist.)"""

    site: str
    mqtt: MqttConfig
    components: tuple[str, ...] = ()
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    component_settings: Mapping[str, ComponentConfig] = field(default_factory=dict)


def checklist_files(folder: Path) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` of ``folder``, in name order (none for a missing folder)."""
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


class ChecklistsConfig(StrictModel):
    dir: Path = Field(Path("checklists"), description="folder of checklist YAML files")
    definitions: Checklists = Field(
        (), exclude=True, description="the files of `dir`, validated (filled by load_config)"
    )

    @model_validator(mode="before")
    @classmethod
    def _definitions_come_from_files(cls, data: Any) -> Any:
        if isinstance(data, dict) and "definitions" in data:
            raise ValueError(
                "definitions: checklists are written as files in the `dir` folder, "
                "not in config.yaml"
            )
        return data

    def load(self, config_dir: Path) -> ChecklistsConfig:
        """This section with ``dir`` resolved against ``config_dir`` (unless absolute) and
        every checklist file of it validated; raises ConfigError naming each problem."""
        folder = self.dir if self.dir.is_absolute() else config_dir / self.dir
        section = self.model_copy(update={"dir": folder})
        if not checklist_files(folder):
            return section
        from ccwatch.checklists.definition import load_checklists

        return section.with_checklists(load_checklists(folder))

    def with_checklists(self, checklists: Iterable[Checklist]) -> ChecklistsConfig:
        """This section holding ``checklists`` (what ``load`` does, for checklists at hand)."""
        return self.model_copy(update={"definitions": tuple(checklists)})

    @property
    def scheduled(self) -> list[Checklist]:
        return [checklist for checklist in self.definitions if checklist.schedule is not None]
