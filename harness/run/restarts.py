"""Elastic restarts: what a failed attempt leaves for the next one, and the segments they make.

Torch's elastic agent (arcbench's own launcher with ``--max-restarts``, or
torchrun's) stops every worker when one fails and starts them again; the new
attempt resumes from the run's last checkpoint.  The failed attempt's workers
note why they failed in the run directory's ``restarts.jsonl``; rank 0 of the
next attempt notes where it resumed and the cause; the runner turns those
notes into segments ended ``restarted`` (see :func:`arcbench.run.segments.closed`).
A worker killed outright (SIGKILL, the out-of-memory killer) leaves no note of
its own: the cause then says so, with what the surviving ranks saw.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import List, Optional

FILE = "restarts.jsonl"

#: messages of ranks that only noticed that another rank went away
SECONDARY = ("connection reset", "connection closed", "broken pipe", "gloo", "nccl", "tccl", "processgroup",
             "distbackenderror", "timed out", "socket")


def attempt() -> int:
    """How many times the elastic agent has restarted this process's workers (0: the first start)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def under_agent() -> bool:
    return "TORCHELASTIC_RESTART_COUNT" in os.environ


def will_restart(exc: Optional[BaseException] = None) -> bool:
    """This process is a worker of an agent that restarts it after this failure: the run is not over.

    A Ctrl-C (SIGINT) stops the agent too, so it is never a restart; SIGTERM is how the agent
    stops the survivors of a failed worker."""
    if not under_agent():
        return False
    try:
        remaining = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS") or 0) - attempt()
    except ValueError:
        return False
    if remaining <= 0:
        return False
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) == f"signal {int(signal.SIGTERM)}"
    return True


def _append(run_dir: str, row: dict) -> None:
    try:
        with open(os.path.join(run_dir, FILE), "a") as fh:
            fh.write(json.dumps(row) + "\n")
    except OSError:
        pass  # a note for the record; the restart itself does not depend on it


def read(run_dir: str) -> List[dict]:
    try:
        with open(os.path.join(run_dir, FILE)) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(row, dict):
            rows.append(row)
    return rows


def note_failure(run_dir: str, rank: int, exc: BaseException) -> None:
    """A worker of an agent-launched run fails: say why, for the next attempt's record."""
    if not (run_dir and under_agent()):
        return
    from ..errors import ArcbenchError

    text = str(exc) if isinstance(exc, ArcbenchError) else f"{type(exc).__name__}: {plain_message(str(exc))}"
    text = (text.strip().splitlines() or [type(exc).__name__])[-1][:300]
    _append(run_dir, {"event": "failed", "attempt": attempt(), "rank": int(rank), "reason": text,
                      "time": time.time()})


def plain_message(message: str) -> str:
    """A gloo/NCCL message without its source path and boiler-plate advice."""
    message = re.sub(r"\[/[^\]]*\]\s*", "", message)
    return message.split(". This is typically")[0].strip()


def cause(rows: List[dict], failed_attempt: int) -> str:
    """One line: why attempt ``failed_attempt`` ended, its likely root cause first."""
    failures = [r for r in rows if r.get("event") == "failed" and r.get("attempt") == failed_attempt]
    primary = [r for r in failures if not any(s in str(r.get("reason", "")).lower() for s in SECONDARY)]
    if primary:
        r = min(primary, key=lambda r: r.get("time") or 0)
        return f"worker rank {r.get('rank')} failed: {r.get('reason')}"
    text = ("a worker stopped without an error of its own (killed by a signal such as SIGKILL, "
            "the out-of-memory killer, or its node went away)")
    if failures:
        r = min(failures, key=lambda r: r.get("time") or 0)
        text += f"; rank {r.get('rank')} saw: {r.get('reason')}"
    return text


def note_restart(run_dir: str, resumed_at: int) -> Optional[dict]:
    """Rank 0 of a restarted attempt: where it resumed and why the attempt before it ended."""
    n = attempt()
    if not (run_dir and n):
        return None
    row = {"event": "restarted", "attempt": n, "resumed_at": int(resumed_at), "time": time.time(),
           "cause": cause(read(run_dir), n - 1)}
    _append(run_dir, row)
    return row


def since(run_dir: str, started: Optional[float]) -> List[dict]:
    """The restarts of the launch that began at ``started``, in order."""
    if started is None:
        return []
    rows = [r for r in read(run_dir) if r.get("event") == "restarted" and (r.get("time") or 0) >= started]
    return sorted(rows, key=lambda r: r["time"])
