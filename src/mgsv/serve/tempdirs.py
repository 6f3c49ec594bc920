"""The server's private temporary folder: uploads and renders live here under names the server makes.

Each server process owns one folder `<base>/mgsv-serve-XXXXXXXX` (mode 0700) and holds an exclusive `flock` on
its `.lock` file for as long as it runs. The kernel drops that lock when the process dies, however it dies, so at
start-up any `mgsv-serve-*` folder whose lock can be taken belongs to a dead server and is removed (the stale-temp
sweep). A live server's folder is never touched, even by another server sharing the base folder, and a recycled
process id cannot fool the check (unlike a pid file).

Every request that needs files gets a `Scratch` folder inside, removed when the request is done.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("mgsv.serve")

PREFIX = "mgsv-serve-"
STARTING_PREFIX = ".mgsv-serve-starting-"
LOCK_FILE = ".lock"
STARTING_GRACE_S = 3600.0  # a folder still being set up is this old only if its server died doing it


class Scratch:
    """A request's private folder; `remove()` deletes it (idempotent, safe from any thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._removed = False

    def file(self, name: str) -> Path:
        """A path inside the folder; `name` is chosen by the server, never taken from a request."""
        return self.path / name

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        with self._lock:
            if self._removed:
                return
            self._removed = True
        shutil.rmtree(self.path, ignore_errors=True)


class PrivateTempRoot:
    """This process's temporary folder (see the module docstring); `close()` removes it."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        self.base = Path(base) if base is not None else Path(tempfile.gettempdir())
        self.base.mkdir(parents=True, exist_ok=True)
        self.swept = sweep_stale(self.base)
        # Made under another prefix and locked before it is renamed into the swept name, so that a sweep by
        # another server starting at the same moment never sees it unlocked.
        starting = Path(tempfile.mkdtemp(prefix=STARTING_PREFIX, dir=self.base))  # 0700, unpredictable name
        self._lock_fd = os.open(starting / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self.base / (PREFIX + starting.name[len(STARTING_PREFIX) :])
        os.rename(starting, self.path)
        self.kept = self.path / "kept"
        self.kept.mkdir(mode=0o700)
        self.cache = self.path / "cache"
        self.cache.mkdir(mode=0o700)

    def scratch(self) -> Scratch:
        """A new empty folder for one request."""
        path = self.path / f"req-{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        return Scratch(path)

    def close(self) -> None:
        """Remove the folder (at a clean shutdown; after a crash the next start-up's sweep does it)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def sweep_stale(base: Path) -> list[Path]:
    """Remove the temporary folders of servers that are no longer running; returns what was removed."""
    removed = []
    for folder in base.glob(f"{PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            fd = os.open(folder / LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # crashed before taking its lock, or a half-removed folder
        except OSError as exc:
            log.warning("%s: cannot check whether a server still uses it (%s); left alone", folder, exc)
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live server holds it
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            if fd is not None:
                os.close(fd)
    for folder in base.glob(f"{STARTING_PREFIX}*"):  # a crash in the instant between mkdtemp and rename
        try:
            abandoned = time.time() - folder.stat().st_mtime > STARTING_GRACE_S
        except OSError:
            continue
        if abandoned and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d temporary folder(s) left by servers that stopped without cleaning up", len(removed))
    return removed
