"""One place that installs global things and guarantees they are removed.

Every torch hook handle, tensor hook and monkeypatch a check makes goes through
a HookSet, whose ``remove_all`` runs in the plugin's ``finally``: no hook may
outlive the test that installed it, also when the test fails.
"""

from __future__ import annotations

from typing import Any, Callable, List


class HookSet:
    """A stack of undo actions, run in reverse order by :meth:`remove_all`."""

    def __init__(self) -> None:
        self._undo: List[Callable[[], None]] = []

    def add(self, handle: Any) -> Any:
        """Keep a torch ``RemovableHandle`` (anything with ``.remove()``) for removal."""
        self._undo.append(handle.remove)
        return handle

    def patch(self, owner: Any, attribute: str, replacement: Any) -> None:
        """Replace ``owner.attribute`` until :meth:`remove_all`."""
        original = getattr(owner, attribute)
        setattr(owner, attribute, replacement)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def on_remove(self, action: Callable[[], None]) -> None:
        self._undo.append(action)

    def remove_all(self) -> None:
        """Undo everything, newest first; every undo runs even if one raises."""
        errors: List[BaseException] = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep removing the rest
                errors.append(exc)
        if errors:
            raise errors[0]

    def __len__(self) -> int:
        return len(self._undo)
