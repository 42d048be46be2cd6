"""What linting one file produces. Kept free of libcst so that a fully cached run never imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from pytest_trainsafe.finding import Finding


@dataclass(frozen=True)
class LintError:
    """A file (or one rule on one file) that could not be checked."""

    path: str
    line: int
    message: str


@dataclass
class FileResult:
    path: str
    findings: List[Finding] = field(default_factory=list)
    errors: List[LintError] = field(default_factory=list)
