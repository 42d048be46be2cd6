"""Results of unchanged files, kept between runs.

An entry is valid for the same path, the same bytes, the same trainsafe version
and the same effective configuration; anything else is a miss. A cache that
cannot be read or written is simply not used.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import replace
from typing import Dict, Optional, Tuple

from pytest_trainsafe import __version__

from .results import FileResult

CACHE_DIR = ".trainsafe_cache"


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Cache:
    def __init__(self, root: str, config_key: str) -> None:
        key = digest(f"{__version__}\0{config_key}".encode())
        self.directory = os.path.join(root, CACHE_DIR)
        self.path = os.path.join(self.directory, f"results-{key}.pickle")
        self._entries: Dict[str, Tuple[str, FileResult]] = {}
        self._dirty = False
        try:
            with open(self.path, "rb") as handle:
                loaded = pickle.load(handle)
            if isinstance(loaded, dict):
                self._entries = loaded
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
            pass

    def get(self, path: str, content_digest: str) -> Optional[FileResult]:
        entry = self._entries.get(os.path.abspath(path))
        if entry is None or entry[0] != content_digest:
            return None
        stored = entry[1]
        if stored.path == path:
            return stored
        # The same file named another way (another working directory): report it as asked.
        return FileResult(path, [replace(f, path=path) for f in stored.findings],
                          [replace(e, path=path) for e in stored.errors])

    def put(self, path: str, content_digest: str, result: FileResult) -> None:
        self._entries[os.path.abspath(path)] = (content_digest, result)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            tag = os.path.join(self.directory, "CACHEDIR.TAG")
            if not os.path.exists(tag):
                with open(tag, "w") as handle:
                    handle.write("Signature: 8a477f597d28d172789f06886806bc55\n# trainsafe lint cache\n")
                with open(os.path.join(self.directory, ".gitignore"), "w") as handle:
                    handle.write("*\n")
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(descriptor, "wb") as handle:
                pickle.dump(self._entries, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.path)
        except OSError:
            pass
