"""``[tool.trainsafe]`` in pyproject.toml, merged with the command line (CLI wins).

Every mistake is an error that names the key or code and where it came from,
because a silently ignored ``selct = [...]`` is a rule the user believes is on.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from pytest_trainsafe.catalog import RULES, UnknownCodeError, expand_codes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib

KEYS = ("select", "ignore", "extend-select", "per-file-ignores", "exclude")


class ConfigError(ValueError):
    """A bad configuration value; the message names the key or code and its origin."""


@dataclass(frozen=True)
class Config:
    codes: Tuple[str, ...]
    per_file_ignores: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    exclude: Tuple[str, ...] = ()
    #: Directory that relative globs (exclude, per-file-ignores) are matched from.
    root: str = "."
    source: Optional[str] = None

    def ignored_codes_for(self, path: str) -> Tuple[str, ...]:
        relative = _relative(path, self.root)
        codes: List[str] = []
        for pattern, pattern_codes in self.per_file_ignores:
            if _matches(relative, pattern):
                codes.extend(pattern_codes)
        return tuple(codes)

    def is_excluded(self, path: str) -> bool:
        relative = _relative(path, self.root)
        return any(_matches(relative, pattern) for pattern in self.exclude)

    def key(self) -> str:
        """What a cached result depends on besides the file's content and trainsafe's version."""
        return repr((self.codes, self.per_file_ignores))


def _relative(path: str, root: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return relative.replace(os.sep, "/")


def _matches(relative: str, pattern: str) -> bool:
    """gitignore-like: a pattern matches the path, or any of its parent directories, or its name."""
    pattern = pattern.rstrip("/")
    if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(os.path.basename(relative), pattern):
        return True
    parts = relative.split("/")
    return any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts)))


def find_pyproject(start: str) -> Optional[str]:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.trainsafe]`` table."""
    directory = os.path.abspath(start)
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as handle:
                    if "trainsafe" in tomllib.load(handle).get("tool", {}):
                        return candidate
            except (OSError, tomllib.TOMLDecodeError):
                pass  # reported only if it is the one explicitly asked for
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def load_table(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("trainsafe", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.trainsafe] in {path} must be a table")
    return table


def _codes(value: Any, origin: str) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{origin} must be a list of rule codes")
    try:
        return expand_codes(value, origin)
    except UnknownCodeError as exc:
        raise ConfigError(str(exc)) from None


def _string_list(value: Any, origin: str) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{origin} must be a list of strings")
    return list(value)


def build(table: Mapping[str, Any], cli: Mapping[str, Any], source: Optional[str], root: str) -> Config:
    """Merge a ``[tool.trainsafe]`` table (from ``source``) with command-line values (which win)."""
    where = f"[tool.trainsafe] in {source}" if source else "the configuration"
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {', '.join(KEYS)})")

    def layer(key: str) -> Tuple[Any, str]:
        if cli.get(key) is not None:
            return cli[key], f"--{key}"
        return table.get(key), f"{key!r} in {where}"

    select_value, select_origin = layer("select")
    selected = _codes(select_value, select_origin) if select_value is not None else [
        code for code, rule in RULES.items() if rule.default_enabled]
    extend_value, extend_origin = layer("extend-select")
    if extend_value is not None:
        selected += [c for c in _codes(extend_value, extend_origin) if c not in selected]
    ignore_value, ignore_origin = layer("ignore")
    ignored = set(_codes(ignore_value, ignore_origin)) if ignore_value is not None else set()

    per_file_value, per_file_origin = layer("per-file-ignores")
    per_file: List[Tuple[str, Tuple[str, ...]]] = []
    if per_file_value is not None:
        if not isinstance(per_file_value, dict):
            raise ConfigError(f"{per_file_origin} must be a table of glob = [codes]")
        for pattern, codes in per_file_value.items():
            per_file.append((pattern, tuple(_codes(codes, f"{per_file_origin} for {pattern!r}"))))

    exclude_value, exclude_origin = layer("exclude")
    exclude = _string_list(exclude_value, exclude_origin) if exclude_value is not None else []
    return Config(tuple(c for c in selected if c not in ignored), tuple(per_file), tuple(exclude), root, source)


def parse_cli_codes(value: Optional[str]) -> Optional[List[str]]:
    return None if value is None else [part for part in value.replace(",", " ").split() if part]


def parse_per_file_ignores(values: Optional[Sequence[str]]) -> Optional[Dict[str, List[str]]]:
    """``--per-file-ignores 'tests/*:TS004,TS005'`` (repeatable) as a table."""
    if not values:
        return None
    table: Dict[str, List[str]] = {}
    for value in values:
        pattern, sep, codes = value.rpartition(":")
        if not sep or not pattern:
            raise ConfigError(f"--per-file-ignores expects GLOB:CODES, got {value!r}")
        table.setdefault(pattern, []).extend(parse_cli_codes(codes) or [])
    return table


def load(cli: Mapping[str, Any], config_path: Optional[str], start: str = ".") -> Config:
    """The effective configuration: an explicit ``--config`` file, else the nearest pyproject.toml."""
    source = config_path or find_pyproject(start)
    table = load_table(source) if source else {}
    root = os.path.dirname(os.path.abspath(source)) if source else os.path.abspath(start)
    return build(table, cli, source, root)
