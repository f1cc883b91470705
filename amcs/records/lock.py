"""The flock on ``data.jsonl.lock`` that refuses a second writer of an output: the OS drops it when
its process dies, and a clean release removes the file."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from amcs.records.format import OutputError, OutputLockedError, lock_path_for


class OutputLock:
    """Holds the lock of the output ``path`` from construction until ``release``; raises
    OutputLockedError when another process holds it, OutputError when the folder is not
    writable."""

    def __init__(self, path: Path):
        self.path = path
        self.lock_path = lock_path_for(path)
        self._file = self._acquire()

    def _acquire(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {self.path.parent}: {exc.strerror}") from None
        while True:
            try:
                lock = open(self.lock_path, "a")  # noqa: SIM115 - held until release()
            except OSError as exc:
                raise OutputError(
                    f"cannot write in {self.path.parent}: {exc.strerror} ({self.lock_path})"
                ) from None
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise OutputLockedError(
                    f"another amcs process is writing {self.path} (lock file {self.lock_path})"
                ) from None
            # The lock file is removed on release; if it was removed (and maybe re-created by
            # another writer) between our open and flock, we hold a stale inode: try again.
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return lock
            lock.close()

    def release(self) -> None:
        """Remove the lock file, then drop the lock; a second call does nothing."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)  # while still holding it; see _acquire
            self._file.close()
            self._file = None
