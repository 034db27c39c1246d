"""Run directories and DLLogger-format metrics.

Layout: ``<out>/<run_id>/{config.json, system.json, metrics.jsonl,
summary.json, checkpoints/, plots/}``.  JSON files are replaced atomically;
``metrics.jsonl`` is append-only, one flushed line per record, so a crash
loses at most the line being written (readers skip a torn last line).
Metric names follow NVIDIA DLLogger practice and the SDAA model-zoo contract
(``train.loss``, ``train.ips``, ``train.total_ips``, ``val.lfw.accuracy`` ...,
and ``rank`` in every record); the step is ``(epoch, iteration)``, ``(epoch,)`` or ``()``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import time
from typing import Optional

from . import atomic
from .errors import ArcbenchError

METRIC_META = {
    "train.loss": {"unit": "", "format": ":.4f"},
    "train.lr": {"unit": "", "format": ":.6f"},
    "train.ips": {"unit": "images/s", "format": ":.1f"},
    "train.total_ips": {"unit": "images/s", "format": ":.1f"},
    "train.compute_ips": {"unit": "images/s", "format": ":.1f"},
    "train.data_time": {"unit": "s", "format": ":.4f"},
    "train.compute_time": {"unit": "s", "format": ":.4f"},
    "val.lfw.accuracy": {"unit": "", "format": ":.4f"},
    "val.lfw.accuracy_std": {"unit": "", "format": ":.4f"},
    "val.ips": {"unit": "images/s", "format": ":.1f"},
}

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
        fd = os.open(os.path.join(self.run_dir, ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                     0o644)
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


def git_commit() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def system_info(device, world_size: int = 1) -> dict:
    import torch

    from .device import cpu_model

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


def _terminate_torn_line(path: str) -> None:
    """A run killed mid-write can leave half a line; end it so the next record starts on its own
    line (readers skip the torn one instead of losing the record glued to it)."""
    try:
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    except OSError:
        pass


#: tcap_dllogger's JSON backend empties the file it opens, so each run segment (a fresh run,
#: each --resume) writes its own file: metrics.tcap.json, then metrics.tcap.1.json, ...
TCAP_PREFIX = "metrics.tcap"


def tcap_segments(run_dir: str) -> list:
    """The run's tcap_dllogger files, oldest segment first."""
    found = []
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    for name in names:
        m = re.fullmatch(re.escape(TCAP_PREFIX) + r"(?:\.(\d+))?\.json", name)
        if m:
            found.append((int(m.group(1) or 0), os.path.join(run_dir, name)))
    return [p for _, p in sorted(found)]


def _claim_segment(run_dir: str) -> str:
    """Create (exclusively) the next unused segment file, so the library truncates only that empty file."""
    for i in range(100000):
        path = os.path.join(run_dir, f"{TCAP_PREFIX}.json" if i == 0 else f"{TCAP_PREFIX}.{i}.json")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise ArcbenchError("too many tcap_dllogger segments", run_dir)


def _default_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class MetricsLog:
    """DLLogger JSON-lines writer (``DLLL {...}``), and ``tcap_dllogger`` beside it when importable.

    The tcap output follows the SDAA model-zoo contract: one ``Logger`` with a
    ``StdOutBackend(Verbosity.DEFAULT)`` and a ``JSONStreamBackend(Verbosity.VERBOSE, file)``,
    a ``rank`` field in every record.  Records go to the JSON backend only; a record
    logged with ``echo=True`` (verbosity DEFAULT) is printed by the stdout backend too,
    which the trainer asks for only when no progress bar is shown.
    """

    def __init__(self, path: str, use_tcap: Optional[bool] = None, rank: Optional[int] = None):
        self.path = path
        self.rank = _default_rank() if rank is None else int(rank)
        self.start = time.time()
        _terminate_torn_line(path)
        self._fh = open(path, "a", buffering=1, encoding="utf-8")
        self._tcap = None
        self.tcap_path: Optional[str] = None
        if use_tcap is None:
            use_tcap = os.environ.get("ARCBENCH_TCAP_DLLOGGER", "1") != "0"
        if use_tcap:
            try:
                import tcap_dllogger  # noqa: F401  (SDAA images ship it)
            except Exception:
                tcap_dllogger = None
            if tcap_dllogger is not None:
                try:
                    self.tcap_path = _claim_segment(os.path.dirname(os.path.abspath(path)))
                    V = tcap_dllogger.Verbosity
                    self._tcap_json = tcap_dllogger.JSONStreamBackend(V.VERBOSE, self.tcap_path)
                    self._tcap_logger = tcap_dllogger.Logger(
                        [tcap_dllogger.StdOutBackend(V.DEFAULT), self._tcap_json])
                    self._tcap = tcap_dllogger
                except Exception:
                    self._tcap = None

    @property
    def echoes(self) -> bool:
        """True when ``log(..., echo=True)`` prints a line (tcap_dllogger's stdout backend)."""
        return self._tcap is not None

    def _write(self, record: dict) -> None:
        self._fh.write("DLLL " + json.dumps(record, default=atomic._default) + "\n")

    def metadata(self, metric: str, meta: dict) -> None:
        now = time.time()
        self._write({"timestamp": f"{now:.3f}", "datetime": _dt.datetime.fromtimestamp(now).isoformat(),
                     "elapsedtime": f"{now - self.start:.3f}", "type": "METADATA", "metric": metric,
                     "metadata": meta})
        if self._tcap is not None:
            self._tcap_logger.metadata(metric, meta)

    def log(self, step, data: dict, echo: bool = False) -> None:
        now = time.time()
        data = {**data, "rank": self.rank} if "rank" not in data else data
        self._write({"timestamp": f"{now:.3f}", "datetime": _dt.datetime.fromtimestamp(now).isoformat(),
                     "elapsedtime": f"{now - self.start:.3f}", "type": "LOG", "step": list(step), "data": data})
        if self._tcap is not None:
            verbosity = self._tcap.Verbosity.DEFAULT if echo else self._tcap.Verbosity.VERBOSE
            self._tcap_logger.log(step=tuple(step), data=data, verbosity=verbosity)

    def flush(self) -> None:
        self._fh.flush()
        if self._tcap is not None:
            self._tcap_logger.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._fh.close()
            if self._tcap is not None:
                # the library registers these at exit; a closed file must not be flushed there
                import atexit

                atexit.unregister(self._tcap_logger.flush)
                atexit.unregister(self._tcap_json.file.close)
                self._tcap_json.file.close()
                self._tcap = None


class Recorder:
    """Everything rank 0 writes into one run directory."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.summary: dict = {}
        self.metrics: Optional[MetricsLog] = None
        os.makedirs(os.path.join(run_dir, "plots"), exist_ok=True)
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        self._load_summary()

    def _load_summary(self) -> None:
        path = os.path.join(self.run_dir, "summary.json")
        if os.path.exists(path):
            try:
                with open(path) as fh:
                    self.summary = json.load(fh)
            except (OSError, ValueError):
                self.summary = {}

    def open_metrics(self) -> MetricsLog:
        if self.metrics is None:
            self.metrics = MetricsLog(os.path.join(self.run_dir, "metrics.jsonl"))
            for name, meta in METRIC_META.items():
                self.metrics.metadata(name, meta)
        return self.metrics

    def log(self, step, data: dict, echo: bool = False) -> None:
        """One record; ``echo`` also prints it through tcap_dllogger's stdout backend, when present."""
        if self.enabled:
            self.open_metrics().log(step, data, echo=echo)

    @property
    def echoes(self) -> bool:
        return bool(self.enabled and self.open_metrics().echoes)

    def write_json(self, name: str, obj) -> None:
        atomic.write_json(os.path.join(self.run_dir, name), obj)

    def update_summary(self, **fields) -> dict:
        self.summary.update(fields)
        self.write_json("summary.json", self.summary)
        return self.summary

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def path(self, *parts) -> str:
        return os.path.join(self.run_dir, *parts)
