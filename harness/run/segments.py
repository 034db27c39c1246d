"""A run's record across process starts: one segment per start, resumes continue the record.

Each start of a run (the first, and every ``--resume``) is a segment with its
start and end step, wall time, host and how it ended (``completed``, ``failed``,
``interrupted``, ``restarted``: an attempt the elastic agent restarted); the run's
wall time is their sum.  A completed run is resumed only to extend it, so its record is
never rewritten by re-running its end.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Optional

from ..config import ScheduleConfig
from ..errors import ArcbenchError


def refuse_completed(run_dir: str, schedule: ScheduleConfig, overrides: dict) -> None:
    """A completed run is resumed only to extend it: re-running its end would rewrite its record.
    ``schedule``: the saved run's schedule (its epochs and max steps)."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as fh:
            status = json.load(fh).get("status")
    except (OSError, ValueError):
        return
    epochs, max_steps = overrides.get("epochs") or 0, overrides.get("max_steps")
    extends = epochs > schedule.epochs or bool(max_steps and schedule.max_steps and max_steps > schedule.max_steps)
    if status == "completed" and not extends:
        raise ArcbenchError(f"run already completed ({schedule.epochs} epochs); add --epochs N with N > "
                            f"{schedule.epochs} to extend it", run_dir)


def past_segments(summary: dict) -> list:
    """The segments recorded so far; a run recorded before segments existed counts as one."""
    if summary.get("segments"):
        return list(summary["segments"])
    if summary.get("steps") is None:
        return []
    return [{"start_step": 0, "end_step": summary.get("steps"), "wall_time": summary.get("wall_time"),
             "host": None, "ended": summary.get("status"), "reason": summary.get("reason")}]


def total_wall_time(segments: list) -> float:
    return round(sum(seg.get("wall_time") or 0 for seg in segments), 3)


def start_step(summary: dict) -> int:
    """Where this segment started: the end of the last one recorded (0 for a fresh run), or the
    checkpoint it kept when it was killed."""
    done = summary.get("segments") or []
    if not done:
        return 0
    last = done[-1]
    return int(last["kept_step"] if last.get("kept_step") is not None else last.get("end_step") or 0)


def closed(summary: dict, started: float, restarted: list = ()) -> dict:
    """The summary fields that append this process start's segment (started at ``started``).

    ``restarted``: the elastic restarts within it (:func:`arcbench.run.restarts.since`), oldest first;
    each attempt they ended becomes a segment ended ``restarted`` up to the step the next attempt
    resumed from, so the steps it repeats are counted once."""
    segments = list(summary.get("segments") or [])
    step, host = start_step(summary), socket.gethostname()
    for row in restarted:
        segments.append({"start_step": step, "end_step": row["resumed_at"],
                         "wall_time": round(max(0.0, row["time"] - started), 3), "host": host,
                         "ended": "restarted", "reason": row.get("cause")})
        step, started = row["resumed_at"], max(started, row["time"])
    segments.append({"start_step": step if restarted else summary.get("start_step"), "end_step": summary.get("steps"),
                     "wall_time": round(time.time() - started, 3), "host": host,
                     "ended": summary.get("status"), "reason": summary.get("reason")})
    return {"segments": segments, "wall_time": total_wall_time(segments)}


#: how a segment whose process vanished (kill -9, power loss) ended: found by the next --resume
KILLED = "killed"


def killed_segment(run_dir: str, summary: dict, kept_step: Optional[int]) -> Optional[dict]:
    """The segment of a process that died without closing it (its summary still says ``running``
    when the run is resumed), from what it left in ``metrics.jsonl``: its last known step and its
    wall time up to its last record.  ``kept_step``: the checkpoint step the resume continues from
    (the steps after it are redone, and not counted twice).  None when the last segment was closed."""
    if summary.get("status") != "running":
        return None
    began = summary.get("segment_started")
    last_step, last_time, first_time = _last_record(os.path.join(run_dir, "metrics.jsonl"), began)
    start = start_step(summary)
    began = began if began is not None else first_time
    wall = round(max(0.0, last_time - began), 3) if last_time is not None and began is not None else None
    end = last_step if last_step is not None else start
    seg = {"start_step": start, "end_step": end, "wall_time": wall, "host": summary.get("segment_host"),
           "ended": KILLED, "reason": "the process was gone (killed?) when the run was resumed"}
    if kept_step is not None and kept_step < end:
        seg["kept_step"] = int(kept_step)
        seg["steps_redone"] = int(end - kept_step)
    return seg


def _last_record(path: str, since: Optional[float]):
    """``(last global step, time of the last record, time of the first record)`` of the records
    written at or after ``since`` (all when None); the global step is counted from the
    ``(epoch, iteration)`` steps, an epoch's length taken from the earlier epochs' records."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None, None, None
    per_epoch: dict = {}
    last_step = last_time = first_time = None
    for line in lines:
        if not line.startswith("DLLL {"):
            continue
        try:
            rec = json.loads(line[5:])
            ts = float(rec.get("timestamp"))
        except (ValueError, TypeError):
            continue  # a torn last line
        step = rec.get("step")
        if rec.get("type") == "LOG" and isinstance(step, list) and len(step) == 2:
            per_epoch[step[0]] = max(per_epoch.get(step[0], 0), int(step[1]))
        if since is not None and ts < since:
            continue
        first_time = ts if first_time is None else first_time
        last_time = ts
        if rec.get("type") == "LOG" and isinstance(step, list) and len(step) == 2:
            last_step = tuple(step)
    if last_step is None:
        return None, last_time, first_time
    epoch, it = int(last_step[0]), int(last_step[1])
    spe = max([n for e, n in per_epoch.items() if e < epoch] or [0])
    return (epoch - 1) * spe + it, last_time, first_time
