"""Content hashes of the run's files, remembered between runs: what lets ``amt run`` compare every input
volume of a step by content and still skip an unchanged 711-case run in seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from amt_core.atomic import write_json

#: files modified more recently than this are hashed again on the next call (coarse file-system clocks)
RACY_NS = 2_000_000_000


class FileHashes:
    """SHA-256 of files by content, remembered by path, size and ``mtime_ns`` in a JSON file
    (``RUN/.steps/hashes.json``): a file is read again only when one of those changed."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.known: dict[str, list] = {}
        self.used: dict[str, list] = {}
        if path is not None and path.is_file():
            try:
                self.known = dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                self.known = {}  # a damaged cache only costs time

    def __call__(self, path: Path) -> str | None:
        """The file's SHA-256, or None when it is missing."""
        from amt_core.atomic import file_hash

        try:
            st = path.stat()
        except OSError:
            return None
        key = str(path.resolve())
        entry = self.known.get(key)
        if not (isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns]):
            # a file modified in the last seconds could change again within its timestamp's resolution:
            # remembered without its time, so it is read again next time (git's "racily clean" rule)
            racy = time.time_ns() - st.st_mtime_ns < RACY_NS
            entry = [st.st_size, -1 if racy else st.st_mtime_ns, file_hash(path)]
            self.known[key] = entry
        self.used[key] = entry
        return entry[2]

    def save(self) -> None:
        """Keep the entries of the files seen in this run (the cache does not grow without bound)."""
        if self.path is not None:
            write_json(self.path, self.used)
