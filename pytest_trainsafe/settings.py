"""Plugin options: one definition per option, shared by the CLI flag and the ini key.

Precedence is marker > command line > ini (pytest-timeout's convention), and a
bad value is reported with the place it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, FrozenSet, Iterable, List, Optional, Sequence

from . import detectors
from .catalog import RULES, UnknownCodeError, expand_codes


@dataclass(frozen=True)
class Option:
    name: str  # ini key; the flag is --<name with dashes>
    help: str
    kind: str  # "bool", "string" or "codes"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    Option("trainsafe", "watch every test for PyTorch training pitfalls (fails a test that has one)", "bool"),
    Option("trainsafe_warn", "report trainsafe findings as warnings instead of failing the test", "bool"),
    Option("trainsafe_json", "write every trainsafe finding of the session to this JSON file", "string"),
    Option("trainsafe_select", "comma-separated rule codes or prefixes to check (default: all runtime rules)", "codes"),
    Option("trainsafe_ignore", "comma-separated rule codes or prefixes never to report", "codes"),
)


def runtime_codes() -> List[str]:
    """The codes a plain ``--trainsafe`` checks: every default-on rule with a runtime side."""
    present = detectors.runtime_codes()
    return [code for code, rule in RULES.items() if code in present and rule.default_enabled]


def split_codes(value: Any) -> List[str]:
    """Codes from a string (``"TS001, TS002"``) or a list whose items may hold several."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [code for item in value for code in str(item).replace(",", " ").split()]


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    warn: bool = False
    json_path: Optional[str] = None
    codes: FrozenSet[str] = frozenset()

    def narrowed(self, select: Sequence[str], ignore: Sequence[str], origin: str) -> "Settings":
        """These settings with a marker's (or any later layer's) select/ignore applied."""
        codes = set(expand_codes(select, origin)) & detectors.runtime_codes() if select else set(self.codes)
        codes -= set(expand_codes(ignore, origin))
        return replace(self, codes=frozenset(codes))


def resolve(cli: dict, ini: dict) -> Settings:
    """Merge the ini layer under the command-line layer; raise UnknownCodeError naming the origin."""

    def pick(name: str) -> tuple:
        if cli.get(name) not in (None, False, [], ""):
            return cli[name], "--" + name.replace("_", "-")
        return ini.get(name), f"the {name} ini option"

    enabled, _ = pick("trainsafe")
    warn, _ = pick("trainsafe_warn")
    json_path, _ = pick("trainsafe_json")
    select, select_origin = pick("trainsafe_select")
    ignore, ignore_origin = pick("trainsafe_ignore")
    selected = split_codes(select)
    codes: Iterable[str] = expand_codes(selected, select_origin) if selected else runtime_codes()
    ignored = set(expand_codes(split_codes(ignore), ignore_origin))
    return Settings(bool(enabled), bool(warn), json_path or None,
                    frozenset(c for c in codes if c not in ignored and c in detectors.runtime_codes()))


__all__ = ["OPTIONS", "Settings", "resolve", "UnknownCodeError", "runtime_codes"]
