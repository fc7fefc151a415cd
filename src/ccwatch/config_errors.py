"""What is wrong with a config or checklist file, as one readable line per problem.

``read_yaml`` and ``validate_data`` raise ``ConfigError`` with lines such as::

    tickets -> 2 -> url: Input should be a valid URL, relative URL without a base
    mqtt -> prot: unknown key; did you mean 'port'?
    mqtt -> password: unknown key; secrets are never written inline: name an ...
    YAML syntax error at line 4, column 4: mapping values are not allowed here

Key paths count list items from 1, drop pydantic's tagged-union branch names, and an
unknown key gets the nearest allowed one (or the list of allowed keys). Used for
config.yaml and for every checklist file; nothing here knows their models.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ccwatch.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become a ConfigError naming the line and column.

    Files over ``MAX_CONFIG_BYTES`` are refused before they are read: a config (or a
    checklist) is a page or two, and a runaway file must not stall the daemon on SIGHUP.
    """
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                str(path),
                [f"{path} is {size:,} bytes; a config file may be at most {MAX_CONFIG_BYTES:,}"],
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read {path}: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(str(path), [f"YAML syntax error at {where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"YAML syntax error: {exc}"]) from None


def validate_data(model: type[BaseModel], data: Any, source: str) -> Any:
    """Validate ``data`` into ``model``; every problem becomes one path-named line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_errors(exc, data, model)) from None


_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "routing_key", "dsn")


def format_validation_errors(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        path, hint = _readable_location(error["loc"], data, model, error["type"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + hint
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _readable_location(
    loc: tuple[int | str, ...], data: Any, model: type[BaseModel], error_type: str
) -> tuple[str, str]:
    """Key path with list items counted from 1, union tags dropped, and a near-miss hint."""
    parts: list[str] = []
    node: Any = data
    annotation: Any = model
    for index, key in enumerate(loc):
        is_last = index == len(loc) - 1
        # A tagged-union branch name ('webhook') that pydantic puts into the path.
        is_union_tag = isinstance(node, dict) and key not in node and node.get("type") == key
        if is_union_tag and not is_last and isinstance(key, str):
            annotation = _union_member(annotation, key)
            continue
        if isinstance(key, int):
            parts.append(str(key + 1))
            node = node[key] if isinstance(node, list) and key < len(node) else None
            annotation = _item_type(annotation)
            continue
        parts.append(str(key))
        if is_last and error_type == "extra_forbidden":
            return " -> ".join(parts), _near_miss_hint(key, annotation)
        node = node.get(key) if isinstance(node, dict) else None
        annotation = _field_type(annotation, key)
    return " -> ".join(parts), ""


def _near_miss_hint(key: str, annotation: Any) -> str:
    fields = _model_fields(annotation)
    if any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith(("_env", "_file")):
        choices = [f for f in fields if f.endswith(("_env", "_file"))] or [f"{key}_env"]
        return (
            "; secrets are never written inline: name an environment variable or a file "
            f"({', '.join(choices)})"
        )
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if fields:
        return f"; allowed keys here: {', '.join(sorted(fields))}"
    return ""


def _model_fields(annotation: Any) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        names: list[str] = []
        for name, field in annotation.model_fields.items():
            names.append(field.alias or name)
        return names
    return []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _field_type(annotation: Any, key: str) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if key in (name, field.alias):
                return _strip_optional(field.annotation)
        return None
    if typing.get_origin(annotation) is dict:
        return _strip_optional(typing.get_args(annotation)[1])
    return None


def _item_type(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is list:
        return _strip_optional(typing.get_args(annotation)[0])
    return None


def _strip_optional(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip_optional(members[0])
    return annotation


def _union_member(annotation: Any, tag: str) -> Any:
    annotation = _unwrap(annotation)
    for member in typing.get_args(annotation):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            type_field = member.model_fields.get("type")
            if type_field is not None and tag in typing.get_args(type_field.annotation):
                return member
    return None
