"""`--help` texts that list a service's settings with their defaults, read from the settings
class itself when the help is shown, so no default is ever copied into a help text by hand.

A help text carries a line `@settings package.module:ClassName`; `SettingsHelpFormatter`
replaces it with the variables and their defaults. The class is imported only then, so
`callbridge --help` does not pay for importing every service's settings.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

MARKER = "@settings "
WIDTH = 92


DefaultKind = Literal["required", "computed", "unset", "secret", "value"]


def describe_default(field: FieldInfo) -> tuple[DefaultKind, str]:
    """What a setting defaults to, as (kind, text); the README's tables use it too."""
    if field.is_required():
        return "required", "required"
    if field.default_factory is not None:
        return "computed", "computed"
    value = field.default
    if value is None or value is PydanticUndefined:
        return "unset", "unset"
    if isinstance(value, SecretStr):
        return "secret", "secret"
    if isinstance(value, bool):
        return "value", "true" if value else "false"
    if isinstance(value, list):
        return "value", ",".join(map(str, value)) or "empty"
    return "value", str(value)


def settings_summary(cls: type[BaseSettings], indent: str = "  ") -> str:
    """`NAME (default), ...` for every field, required ones first, wrapped to the help width."""
    fields = sorted(cls.model_fields.items(), key=lambda item: not item[1].is_required())
    # A no-break space keeps each name with its default on one line (textwrap splits on
    # ASCII whitespace only); it is turned back into a space once the text is wrapped.
    words = [f"{name.upper()}\u00a0({describe_default(field)[1]})" for name, field in fields]
    text = textwrap.fill(", ".join(words), width=WIDTH, initial_indent=indent,
                         subsequent_indent=indent, break_on_hyphens=False)
    return text.replace("\u00a0", " ")


def _load(reference: str) -> type[BaseSettings]:
    module, _, name = reference.strip().partition(":")
    cls: Any = getattr(importlib.import_module(module), name)
    return cls


class SettingsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """RawDescriptionHelpFormatter that expands `@settings module:Class` lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = [settings_summary(_load(line.strip()[len(MARKER):]))
                 if line.strip().startswith(MARKER) else line
                 for line in text.splitlines()]
        return super()._fill_text("\n".join(lines) + "\n", width, indent)
