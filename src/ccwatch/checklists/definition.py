"""Checklist files: the model of one file, and loading every file of a folder.

A checklist file (YAML)::

    name: daily                         # default: the file name without .yaml
    schedule: {cron: "30 6 * * *", timezone: Asia/Kolkata}
    recipients: [it-team@example.com]   # default: email.to of config.yaml
    checks:
      - id: disk_root
        type: disk                      # one of checks.REGISTRY
        params: {path: /, fail_free_percent: 10}
        severity: fail                  # or warn: a failure is only reported as a warning
        open_incident: true             # raise an incident while it fails
        timeout: 10s

Problems are reported like config.yaml's, one per line with the key path (list items
counted from 1), under the file's name. Loading touches no network. ``load_config``
loads them with the rest of the configuration (``ChecklistsConfig.definitions``);
nothing reads them again later.
"""

from __future__ import annotations

import difflib
import re
import typing
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from ccwatch.checklists.checks import REGISTRY, CheckType
from ccwatch.checklists.config import checklist_files
from ccwatch.config_errors import read_yaml, validate_data
from ccwatch.configbase import StrictModel
from ccwatch.cron import CronSchedule
from ccwatch.durations import Duration
from ccwatch.errors import ConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_EMAIL = r"^[^@\s]+@[^@\s]+$"


class CheckSpecBase(StrictModel):
    """The keys every check has; ``type`` picks the model of ``params``."""

    id: str = Field(pattern=_NAME, description="unique within the checklist; metric label")
    type: str
    description: str = Field("", description="what the check proves, shown in the report")
    severity: Literal["fail", "warn"] = Field("fail", description="how a failure is reported")
    open_incident: bool = Field(False, description="raise an incident while the check fails")
    incident_severity: Literal["minor", "major", "critical"] = "minor"
    timeout: Duration | None = Field(None, description="default: the checklist's timeout")
    enabled: bool = True
    params: BaseModel


def _spec_model(check_type: CheckType[Any]) -> type[CheckSpecBase]:
    params_model = check_type.params
    try:
        default: Any = params_model()
    except ValueError:
        default = ...  # the type has required parameters
    camel = "".join(part.title() for part in check_type.name.split("_"))
    model: type[CheckSpecBase] = create_model(
        f"{camel}Check",
        __base__=CheckSpecBase,
        type=(typing.cast(Any, Literal)[check_type.name], ...),
        params=(params_model, default),
    )
    return model


SPEC_MODELS: dict[str, type[CheckSpecBase]] = {
    name: _spec_model(check_type) for name, check_type in REGISTRY.items()
}


def _known_type(value: object) -> object:
    """Name an unknown or missing ``type`` with the near miss, before the union tries."""
    if not isinstance(value, dict):
        return value
    known = ", ".join(sorted(REGISTRY))
    kind = value.get("type")
    if kind is None:
        raise ValueError(f"`type` is missing; one of: {known}")
    if kind not in REGISTRY:
        close = difflib.get_close_matches(str(kind), REGISTRY, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"one of: {known}"
        raise ValueError(f"unknown check type {kind!r}; {hint}")
    return value


if TYPE_CHECKING:
    CheckSpec = CheckSpecBase
else:
    CheckSpec = Annotated[
        typing.Union[tuple(SPEC_MODELS.values())],  # noqa: UP007 - built at run time
        Field(discriminator="type"),
        BeforeValidator(_known_type),
    ]


def _email_address(value: str) -> str:
    if not re.match(_EMAIL, value):
        raise ValueError(f"{value!r} is not an e-mail address (name@example.com)")
    return value


class Checklist(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    schedule: CronSchedule | None = Field(
        None, description="none: run only by `ccwatch checklist run`"
    )
    recipients: list[Annotated[str, AfterValidator(_email_address)]] = Field(default_factory=list)
    email_when: Literal["always", "problems", "never"] = Field(
        "always", description="when a scheduled run is e-mailed (problems: warn/fail/error)"
    )
    timeout: Duration = Field(timedelta(seconds=10), description="default per-check timeout")
    checks: list[CheckSpec] = Field(min_length=1)

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Checklist:
        seen: dict[str, int] = {}
        for number, check in enumerate(self.checks, start=1):
            if check.id in seen:
                raise ValueError(
                    f"checks -> {number} -> id: {check.id!r} is already the id of check "
                    f"{seen[check.id]}; ids must be unique"
                )
            seen[check.id] = number
        return self

    def enabled_checks(self) -> list[CheckSpecBase]:
        return [check for check in self.checks if check.enabled]


def load_checklist_file(path: Path) -> Checklist:
    """One checklist file, validated; ConfigError lists every problem with its key path."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["a checklist file must be a YAML mapping (name, checks…)"])
    data.setdefault("name", path.stem)
    checklist: Checklist = validate_data(Checklist, data, str(path))
    return checklist


def load_checklists(folder: Path) -> list[Checklist]:
    """Every ``*.yaml``/``*.yml`` of ``folder``, in name order.

    A missing folder means no checklists (``ccwatch checklist run`` and the daemon's log
    say so). Problems of all files are collected into one ConfigError.
    """
    files = checklist_files(folder)
    loaded: list[tuple[Checklist, Path]] = []
    problems: list[tuple[str, str]] = []
    for path in files:
        try:
            loaded.append((load_checklist_file(path), path))
        except ConfigError as exc:
            problems.extend((str(path), problem) for problem in exc.problems)
    names: dict[str, Path] = {}
    for checklist, path in loaded:
        if checklist.name in names:
            problems.append(
                (str(path), f"name: {checklist.name!r} is also the name of {names[checklist.name]}")
            )
        names[checklist.name] = path
    if problems:
        sources = {source for source, _ in problems}
        if len(sources) == 1:
            raise ConfigError(sources.pop(), [problem for _, problem in problems])
        raise ConfigError(str(folder), [f"{Path(s).name}: {p}" for s, p in problems])
    return [checklist for checklist, _ in loaded]
