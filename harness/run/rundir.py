"""A run directory: its name, its creation, its lock, and the system facts beside it.

Run ids are sanitised to one path component and directories are created
exclusively, so concurrent runs never share one; the lock keeps a second
``--resume`` out of a run that is still going.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
from typing import Optional

from ..errors import ArcbenchError

_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_run_id(run_id: str) -> str:
    """Keep run ids to one safe path component: no separators, no '..'."""
    clean = _SAFE_ID.sub("-", run_id).strip(".-")
    if not clean:
        raise ArcbenchError(f"invalid run id {run_id!r}")
    return clean[:128]


def new_run_id(backbone: str, device: str, mode: str = "train") -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return sanitize_run_id(f"{stamp}-{mode}-{backbone}-{device}-{secrets.token_hex(2)}")


def create_run_dir(out: str, run_id: Optional[str] = None, *, backbone: str = "run", device: str = "x",
                   mode: str = "train") -> str:
    """Make ``out/run_id`` exclusively (concurrent runs never share one) and prove it is writable."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ArcbenchError("output path exists and is not a directory", out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ArcbenchError(f"cannot create the output directory: {exc.strerror}", out) from None
    for _ in range(20):
        rid = sanitize_run_id(run_id) if run_id is not None else new_run_id(backbone, device, mode)
        path = os.path.join(out, rid)
        if os.path.dirname(os.path.abspath(path)) != out:
            raise ArcbenchError(f"run id {run_id!r} escapes the output directory", out)
        try:
            os.makedirs(path)
        except FileExistsError:
            if run_id is not None:
                raise ArcbenchError("run directory already exists (use --resume to continue it)", path) from None
            continue
        except OSError as exc:
            raise ArcbenchError(f"cannot create the run directory: {exc.strerror}", path) from None
        try:
            check_writable(path)
        except ArcbenchError:
            try:
                os.rmdir(path)  # leave no empty run behind
            except OSError:
                pass
            raise
        return path
    raise ArcbenchError("could not pick a unique run id", out)


def check_writable(path: str, need_bytes: int = 1 << 20) -> None:
    """Fail before training starts if the run directory is unwritable or the disk is full."""
    probe = os.path.join(path, ".write-probe")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(probe)
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
    except OSError as exc:
        raise ArcbenchError(f"output directory is not writable: {exc.strerror}", path) from None
    if free < need_bytes:
        raise ArcbenchError(f"output disk is full ({free} bytes free)", path)


class RunLock:
    """Holds ``run_dir/.lock`` while a process trains into the run directory.

    A second ``--resume`` of a run that is still going fails at once instead of two
    processes writing the same files.  The lock is a POSIX record lock (``lockf``): the
    kernel drops it when the holder dies (even by ``kill -9``), so a crashed run never
    stays locked, and -- unlike ``flock`` -- a forked child (a DataLoader worker) does not
    share it, so workers that outlive an interrupt cannot keep a ``--resume`` out.  The
    descriptor is close-on-exec.  Within one process a second holder is refused too.
    No-op without ``fcntl``.
    """

    _held: set = set()  # run directories locked by this process (POSIX locks do not conflict in-process)

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.fd: Optional[int] = None

    def _in_use(self) -> ArcbenchError:
        return ArcbenchError("the run directory is in use by another arcbench process "
                             "(is that run still going?)", self.run_dir)

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        key = os.path.realpath(self.run_dir)
        if key in RunLock._held:
            raise self._in_use()
        path = os.path.join(self.run_dir, ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ArcbenchError(f"cannot lock the run directory: {exc.strerror or exc}", path) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._in_use() from None
        self.fd = fd
        RunLock._held.add(key)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the POSIX lock
            self.fd = None
            RunLock._held.discard(os.path.realpath(self.run_dir))


def lock_held(run_dir: str) -> Optional[bool]:
    """Whether a live process holds ``run_dir``'s lock: True, False (the holder is gone, even if it
    was killed with ``kill -9``: the kernel dropped its lock), or None when it cannot be told (no
    lock file, no ``fcntl``).  Takes a shared lock on a read-only descriptor, so it also works on a
    read-only file system, and never disturbs a holder in this process."""
    if os.path.realpath(run_dir) in RunLock._held:
        return True
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the probe's lock
    return False


def git_commit() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def system_info(device, world_size: int = 1) -> dict:
    import torch

    from ..device import cpu_model

    return {
        "device": device.describe(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "world_size": world_size,
        "git_commit": git_commit(),
        "arcbench": __import__("arcbench").__version__,
    }


def remove_stale_temporaries(run_dir: str) -> None:
    """Half-written ``.<name>.<random>.tmp`` files left by a killed run (the real files are intact)."""
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass
