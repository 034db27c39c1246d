"""What the runner records in a run directory: the summary file, the JSON files, the bad-image list.

Layout: ``<out>/<run_id>/{config.json, system.json, metrics.jsonl, summary.json, checkpoints/,
plots/}``.  JSON files are replaced atomically; the metrics log is :mod:`arcbench.record.metrics_log`.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from . import atomic
from .metrics_log import METRIC_META, MetricsLog

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
