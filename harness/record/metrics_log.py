"""A run's metrics log: DLLogger-format JSON lines (``metrics.jsonl``), and tcap_dllogger beside it.

``metrics.jsonl`` is append-only, one flushed line per record, so a crash loses at most the line
being written (readers skip a torn last line).  Metric names follow NVIDIA DLLogger practice and
the SDAA model-zoo contract (``train.loss``, ``train.ips``, ``train.total_ips``,
``val.lfw.accuracy`` ..., and ``rank`` in every record); the step is ``(epoch, iteration)``,
``(epoch,)`` or ``()``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from typing import Optional

from . import atomic
from ..errors import ArcbenchError

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
    "val.seconds": {"unit": "s", "format": ":.2f"},
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
