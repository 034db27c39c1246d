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

from .errors import ArcbenchError


def refuse_completed(run_dir: str, saved, overrides: dict) -> None:
    """A completed run is resumed only to extend it: re-running its end would rewrite its record."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as fh:
            status = json.load(fh).get("status")
    except (OSError, ValueError):
        return
    epochs, max_steps = overrides.get("epochs") or 0, overrides.get("max_steps")
    extends = epochs > saved.epochs or bool(max_steps and saved.max_steps and max_steps > saved.max_steps)
    if status == "completed" and not extends:
        raise ArcbenchError(f"run already completed ({saved.epochs} epochs); add --epochs N with N > "
                            f"{saved.epochs} to extend it", run_dir)


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
    """Where this segment started: the end of the last one recorded (0 for a fresh run)."""
    done = summary.get("segments") or []
    return int(done[-1].get("end_step") or 0) if done else 0


def closed(summary: dict, started: float, restarted: list = ()) -> dict:
    """The summary fields that append this process start's segment (started at ``started``).

    ``restarted``: the elastic restarts within it (:func:`arcbench.restarts.since`), oldest first;
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
