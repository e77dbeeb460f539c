"""Output folders: one check that a folder can be written (before any work), and the run folder's lock.

`check_out` refuses, in one line and before anything is created, an output folder that cannot be one: a file,
a path below a file, a folder this process may not write (a read-only mount, an immutable folder, missing
permissions), or a place inside a kernel file system (/proc, /sys, /dev other than /dev/shm), where no folder
can be made. It creates nothing; the command creates the folder when it first writes.

`RunLock` is an exclusive ``fcntl.flock`` on ``<run>/train.lock`` for as long as a training writes its run
folder. A second writer is refused in one line that names the holder's pid (written in the file). The file is
removed on release; the kernel drops the lock when the holder exits however it exits, so the empty file a
SIGKILL leaves behind blocks nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

#: kernel file systems: nothing can be created in them (``/dev/shm``, a tmpfs, is an ordinary folder)
_KERNEL_FS = ("/proc", "/sys", "/dev")
_ORDINARY_UNDER_KERNEL = ("/dev/shm",)

LOCK_NAME = "train.lock"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_out(out: str, flag: str = "--out") -> None:
    """A one-line error (ValueError), before any work, for an output folder that cannot be one. Creates nothing."""
    if not out:
        raise ValueError(f"empty {flag}: give a folder (it is created if missing)")
    path = Path(out)
    real = os.path.realpath(path)  # a symlink into /proc is /proc
    for root in _KERNEL_FS:
        if _inside(real, root) and not any(_inside(real, ok) for ok in _ORDINARY_UNDER_KERNEL):
            raise ValueError(f"bad {flag} {out}: it is inside {root}, a kernel file system where no folder can be "
                             f"made; choose a folder on disk")  # fmt: skip
    for parent in (path, *path.parents):  # the nearest part of the path that exists decides
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"bad {flag} {out}: {parent} is a file, not a folder")
            # access(2) answers for root too where it matters: a read-only mount (EROFS), an immutable folder
            if not os.access(parent, os.W_OK | os.X_OK):
                what = "the folder" if parent == path else f"{parent}, where it would be created,"
                raise ValueError(f"bad {flag} {out}: {what} is not writable (read-only, or no permission)")
            break


class RunLock:
    """An exclusive lock on a run folder while one process writes it (a context manager). The lock file holds
    the holder's pid and is removed on release, so a finished run's folder is as the run left it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> RunLock:
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise ValueError(f"{self.run_dir} is in use: {who} is training into it (lock {self.path}); wait "
                                 f"for it to finish, or choose another --out") from None  # fmt: skip
            try:  # a holder that released (and removed the file) between our open and flock: lock the new file
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # before the unlock: a newcomer then locks a file of its own
        os.close(self.fd)
        self.fd = None
        if self.created and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()  # a run refused before it wrote anything leaves no folder behind

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
