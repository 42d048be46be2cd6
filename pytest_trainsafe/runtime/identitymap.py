"""Per-object state keyed by identity, for checks that look a tensor or module up on every event.

``torch.utils.weak.WeakIdKeyDictionary`` builds a Python ``WeakIdRef`` object for
every lookup (about 2 us a ``get``); :class:`IdentityMap` looks up a plain dict by
``id()`` and confirms the identity through the stored weak reference (about 0.2 us),
with the same semantics: entries vanish with their key, never keep it alive, and a
recycled id never matches a dead key. Imports nothing from torch.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Generic, List, Optional, Tuple, TypeVar

_V = TypeVar("_V")
_MISSING: Any = object()


class IdentityMap(Generic[_V]):
    """A weak-keyed mapping by object identity: a fast drop-in for ``WeakIdKeyDictionary``'s common methods."""

    __slots__ = ("_entries", "__weakref__")

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[Any, _V]] = {}

    def _reference(self, key: Any) -> Any:
        entries, ident = self._entries, id(key)

        def forget(reference: Any) -> None:
            entry = entries.get(ident)
            if entry is not None and entry[0] is reference:  # not a newer key that reuses the id
                del entries[ident]

        return weakref.ref(key, forget)

    def _entry(self, key: Any) -> Optional[Tuple[Any, _V]]:
        entry = self._entries.get(id(key))
        return entry if entry is not None and entry[0]() is key else None

    def get(self, key: Any, default: Any = None) -> Any:
        entry = self._entries.get(id(key))  # _entry() inlined: checks look up on every event
        return entry[1] if entry is not None and entry[0]() is key else default

    def __contains__(self, key: Any) -> bool:
        entry = self._entries.get(id(key))
        return entry is not None and entry[0]() is key

    def __getitem__(self, key: Any) -> _V:
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return entry[1]

    def __setitem__(self, key: Any, value: _V) -> None:
        entry = self._entry(key)
        self._entries[id(key)] = (entry[0] if entry is not None else self._reference(key), value)

    def __delitem__(self, key: Any) -> None:
        if self._entry(key) is None:
            raise KeyError(key)
        del self._entries[id(key)]

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        entry = self._entry(key)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        del self._entries[id(key)]
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def items(self) -> List[Tuple[Any, _V]]:
        """The live (key, value) pairs, as a list: safe to iterate while the map changes."""
        pairs = []
        for reference, value in list(self._entries.values()):
            key = reference()
            if key is not None:
                pairs.append((key, value))
        return pairs

    def keys(self) -> List[Any]:
        return [key for key, _ in self.items()]

    def values(self) -> List[_V]:
        return [value for _, value in self.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)
