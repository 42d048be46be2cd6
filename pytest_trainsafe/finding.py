"""The one record both detectors produce, and the way it is printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from .catalog import RULES


@dataclass(frozen=True)
class Finding:
    """A pitfall found at ``path:line``.

    ``detail`` is the situation-specific part (which module, which devices);
    the catalog supplies the code's fixed message and hint, so both sides print
    the same first line for the same mistake.
    """

    code: str
    path: str
    line: int
    col: int = 0
    detail: str = ""
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return RULES[self.code].name

    @property
    def message(self) -> str:
        base = RULES[self.code].message
        return f"{base} ({self.detail})" if self.detail else base

    @property
    def hint(self) -> str:
        return RULES[self.code].hint

    def location(self) -> str:
        return f"{self.path}:{self.line}:{self.col}" if self.col else f"{self.path}:{self.line}"

    def format(self, with_hint: bool = True) -> str:
        text = f"{self.location()}: {self.code} {self.message}"
        if with_hint:
            text += f"\n    hint: {self.hint}"
        return text
