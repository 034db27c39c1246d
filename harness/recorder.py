"""What rank 0 records in a run directory: DLLogger-format metrics and the summary file.

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
import re
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
    "val.seconds": {"unit": "s", "format": ":.2f"},
}

#: the bad training images a run skipped: one "path<TAB>reason" line each (rank 0's share)
BAD_IMAGES_FILE = "bad_images.txt"


def write_bad_images(run_dir: str, entries) -> str:
    """Add ``entries`` ("path: reason", as the loader reports them) to the run's bad-image list,
    keeping the ones earlier segments found; returns its path."""
    path = os.path.join(run_dir, BAD_IMAGES_FILE)
    rows = dict.fromkeys(read_bad_images(run_dir))
    for e in entries:
        where, _, why = str(e).partition(": ")
        rows.setdefault((where, why.replace("\t", " ").replace("\n", " ")), None)
    atomic.write_text(path, "".join(f"{p}\t{w}\n" for p, w in rows))
    return path


def read_bad_images(run_dir: str) -> list:
    """``[(path, reason), ...]`` from the run's bad_images.txt (empty when there is none)."""
    try:
        with open(os.path.join(run_dir, BAD_IMAGES_FILE), encoding="utf-8", errors="replace") as fh:
            return [tuple(line.rstrip("\n").split("\t", 1)) + ("",) * (1 - line.count("\t"))
                    for line in fh if line.strip()]
    except OSError:
        return []


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


def set_key(name: str) -> str:
    """A set name as a metric-name part: ``"AgeDB-30"`` -> ``agedb_30``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "set"


class TrainLog:
    """Rank 0's metrics sink for the training loop: the per-step, per-epoch and verification
    records (DLLL JSON lines, tcap_dllogger beside them), and the console line when no progress
    bar shows.  The loop hands over plain numbers, already on the host."""

    def __init__(self, rec: Optional[Recorder], *, steps_per_epoch: int, per_process_batch: int,
                 world_size: int, say=print, quiet: bool = False):
        self.rec, self.say, self.quiet = rec, say, quiet
        self.steps_per_epoch = steps_per_epoch
        self.per_process_batch = per_process_batch
        self.global_batch = per_process_batch * world_size

    def steps(self, pending: list, losses: list, bar=None) -> None:
        """``pending``: ``(global_step, lr, data_time, compute_time)`` per step, ``losses`` beside it."""
        # without a progress bar, the interval's last record is printed as well (tcap_dllogger's
        # stdout backend when present, else the DLLL line below); with a bar, nothing is
        echo = bar is None and not self.quiet
        n = len(pending)
        if self.rec:
            for i, ((gstep, lr, dt, ct), loss) in enumerate(zip(pending, losses)):
                ep, it = divmod(gstep, self.steps_per_epoch)
                self.rec.log((ep + 1, it + 1), {
                    "train.loss": loss, "train.lr": lr, "train.data_time": dt, "train.compute_time": ct,
                    # train.ips: this rank's images/s (the model-zoo contract); total: all ranks
                    "train.ips": self.per_process_batch / max(dt + ct, 1e-12),
                    "train.total_ips": self.global_batch / max(dt + ct, 1e-12),
                    "train.compute_ips": self.global_batch / max(ct, 1e-12)}, echo=echo and i == n - 1)
            echo = echo and not self.rec.echoes
        gstep, lr, dt, ct = pending[-1]
        ips = self.global_batch / max(dt + ct, 1e-12)
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ips=f"{ips:.0f}", lr=f"{lr:.4g}")
        elif echo:
            ep, it = divmod(gstep, self.steps_per_epoch)
            self.say(f"DLLL epoch {ep + 1} step {it + 1}/{self.steps_per_epoch} "
                     f"train.loss {losses[-1]:.4f} train.total_ips {ips:.1f} train.lr {lr:.6f}")

    def epoch(self, epoch: int, loss: float) -> None:
        if self.rec:
            self.rec.log((epoch,), {"train.loss": loss})

    def verification(self, epoch: int, result: dict, headline: bool = True, several: bool = False) -> None:
        """One record per set per verification point, named by ``val.set``; its keys carry the set's
        name (``val.cfp_fp.accuracy``).  The headline set's record also has the ``val.lfw.*`` keys of
        the model-zoo contract (as ``lfw_accuracy`` in the summary is the headline set's figure,
        whatever its name); a run with one set writes only those, as it always did.  ``val.seconds`` is what verifying this set took."""
        acc, std = float(result["accuracy"]), float(result["accuracy_std"])
        name = result.get("name", "pairs")
        keys = ["lfw"] if headline else []
        if several and set_key(name) not in keys:
            keys.append(set_key(name))
        if self.rec:
            data = {"val.set": name}
            for key in keys:
                data.update({f"val.{key}.accuracy": acc, f"val.{key}.accuracy_std": std})
            data["val.ips"] = float(result.get("images_per_second") or 0.0)
            if result.get("seconds") is not None:
                data["val.seconds"] = float(result["seconds"])
            self.rec.log((epoch,), data)
        if not self.quiet:
            took = "" if result.get("seconds") is None else f", {result['seconds']:.1f} s"
            self.say(f"epoch {epoch}: verification accuracy {acc:.4f} ± {std:.4f} "
                     f"on {name} ({result.get('pairs_used')} pairs{took})")
