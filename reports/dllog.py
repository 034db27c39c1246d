"""Read DLLogger-style logs: arcbench's ``DLLL`` lines and the SDAA model zoo's ``TCAPPDLL`` lines.

One reader serves ``metrics.jsonl`` in run dirs and imported model-zoo logs, so
both give the same records.  Forms understood (one per line):

* ``DLLL {json}`` — NVIDIA DLLogger / arcbench's recorder.
* ``TCAPPDLL {json}`` — tcap_dllogger's JSON backend.  Its ``data`` is
  ``str(dict)`` of string values, so it is parsed with :func:`ast.literal_eval`
  (never ``eval``: a log is untrusted input).
* ``TCAPPDLL <time> - Epoch: E Iteration: I  train.loss : 2.3 ...`` — the
  stdout backend, which is what ends up in most model-zoo ``*.log`` files.
* ``INFO {json}`` — tcap_dllogger's argument dump (used for run metadata).
* a bare ``{json}`` line.
* the model-zoo ArcFace script's own prints in a ``| tee`` log:
  ``LFW_Accuracy: 0.98483+-0.00612`` (the epoch's verification, mean +- std over the
  10 folds) and ``Total Loss: 2.8972`` (the epoch's mean training loss).  They carry
  no step: they belong to the epoch of the last record before them, and become
  ``(epoch,)`` records with ``val.lfw.accuracy``/``val.lfw.accuracy_std`` and
  ``train.loss``.  tqdm's progress output around them is ``other``.

A line that carries a marker but does not parse (a crash mid-write, garbage,
a ``data`` string that is not a literal) is skipped and counted in ``bad``;
lines from other output (print statements, tracebacks) are counted in ``other``.
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import ArcbenchError

Step = Union[Tuple[int, ...], str]

_MARKER = re.compile(r"(?<![A-Za-z])(DLLL|TCAPPDLL|DLL) ")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
#: ``key : value`` in the stdout form; a value may be a printed tensor, ``tensor(2.3, device='sdaa:0')``
_PAIR = re.compile(r"([A-Za-z_][\w./-]*)\s*:\s*(tensor\(\s*(?:" + _NUM + r")[^()]*\)|" + _NUM + r")(?![\w.:])")
_LFW_LINE = re.compile(r"\bLFW_Accuracy:\s*(" + _NUM + r")\s*\+-\s*(" + _NUM + r")")
_TOTAL_LOSS_LINE = re.compile(r"^Total Loss:\s*(" + _NUM + r")\s*$")
_EPOCH = re.compile(r"\bEpoch:\s*(\d+)")
_ITER = re.compile(r"(?<!Validation )\bIteration:\s*(\d+)")
_TUPLE_STEP = re.compile(r"^\s*\((\d+)(?:,\s*(\d+))?,?\)")
_TENSOR = re.compile(r"^tensor\(\s*(" + _NUM + r")\s*[,)]")
#: literal_eval on a huge string can take a long time; no real record is this long
_MAX_LITERAL = 1 << 20


@dataclass
class Record:
    kind: str  # LOG, METADATA, PARAMETER, INFO
    step: Step
    data: Dict[str, Any]
    line: int
    timestamp: Optional[float] = None
    #: a step (or epoch) a resumed run did again after a kill: the later record replaces it
    superseded: bool = False


@dataclass
class ParsedLog:
    path: str
    records: List[Record] = field(default_factory=list)
    metadata: Dict[str, dict] = field(default_factory=dict)
    params: Dict[str, Any] = field(default_factory=dict)
    bad: List[Tuple[int, str]] = field(default_factory=list)
    other: int = 0

    @property
    def logs(self) -> List[Record]:
        return [r for r in self.records if r.kind == "LOG" and not r.superseded]

    @property
    def superseded(self) -> int:
        """How many records a resumed run redid (they are left out of :attr:`logs`)."""
        return sum(1 for r in self.records if r.superseded)


def number(value) -> Any:
    """Coerce ``"2.3"`` (tcap_dllogger stringifies values) to a float; leave the rest."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
        m = _TENSOR.match(text)  # tcap_dllogger str()s values: a logged tensor reads "tensor(2.3, device=...)"
        return float(m.group(1)) if m else value
    return value


def truthy(value) -> Optional[bool]:
    """``True``/``"True"``/``"yes"``/``1`` -> True and the like; None when it is not a yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value != value else bool(value)
    if isinstance(value, str):
        t = value.strip().lower()
        if t in ("true", "yes", "y", "1", "on"):
            return True
        if t in ("false", "no", "n", "0", "off"):
            return False
    return None


def _literal(text: str):
    if len(text) > _MAX_LITERAL:
        raise ValueError("too long")
    # literal_eval only builds literals: names, calls and attributes raise ValueError.
    return ast.literal_eval(text)


def _step(raw) -> Step:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return (int(raw),)
    if isinstance(raw, (list, tuple)):
        out = []
        for v in raw:
            v = number(v)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return str(raw)
            out.append(int(v))
        return tuple(out)
    return str(raw)


def _clean_data(data: dict) -> Dict[str, Any]:
    return {str(k): number(v) for k, v in data.items()}


def _from_json(obj, lineno: int, parsed: ParsedLog) -> Optional[str]:
    """Add one JSON record; return the reason when it is unusable."""
    if not isinstance(obj, dict):
        return "record is not a JSON object"
    kind = str(obj.get("type", "LOG")).upper()
    ts = number(obj.get("timestamp"))
    ts = float(ts) if isinstance(ts, (int, float)) else None
    if kind == "METADATA":
        meta = obj.get("metadata")
        if isinstance(meta, str):
            try:
                meta = _literal(meta)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return "metadata is not a literal"
        if "metric" not in obj or not isinstance(meta, dict):
            return "METADATA record without metric/metadata"
        parsed.metadata[str(obj["metric"])] = meta
        parsed.records.append(Record("METADATA", (), {"metric": obj["metric"], **meta}, lineno, ts))
        return None
    data = obj.get("data", {})
    if isinstance(data, str):
        try:
            data = _literal(data)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return "data is not a Python/JSON literal (refused)"
    if not isinstance(data, dict):
        return "data is not a dict"
    data = _clean_data(data)
    step = _step(obj.get("step"))
    if kind == "INFO" or step == "PARAMETER" or kind == "PARAMETER":
        kind = "INFO" if kind == "INFO" else "PARAMETER"
        parsed.params.update(data)
    parsed.records.append(Record(kind, step, data, lineno, ts))
    return None


def _from_text(text: str, lineno: int, parsed: ParsedLog) -> bool:
    """The stdout backend's ``Epoch: E Iteration: I  key : value ...`` form."""
    head, sep, tail = text.partition(" - ")
    body = tail if sep else head
    step: List[int] = []
    m = _EPOCH.search(body)
    if m:
        step.append(int(m.group(1)))
        it = _ITER.search(body)
        if it:
            step.append(int(it.group(1)))
    else:
        t = _TUPLE_STEP.match(body)
        if t:
            step = [int(g) for g in t.groups() if g is not None]
    data = {}
    for key, value in _PAIR.findall(body):
        if key in ("Epoch", "Iteration"):
            continue
        data[key] = number(value)
    if not data:
        return False
    parsed.records.append(Record("LOG", tuple(step), data, lineno))
    return True


def _last_epoch(parsed: ParsedLog) -> Step:
    for r in reversed(parsed.records):
        if r.kind == "LOG" and isinstance(r.step, tuple) and r.step:
            return (r.step[0],)
    return ()


def _from_print(line: str, lineno: int, parsed: ParsedLog) -> bool:
    """The model-zoo script's ``LFW_Accuracy: a+-b`` and ``Total Loss: x`` prints."""
    m = _LFW_LINE.search(line)
    if m:
        data = {"val.lfw.accuracy": number(m.group(1)), "val.lfw.accuracy_std": number(m.group(2))}
    else:
        m = _TOTAL_LOSS_LINE.match(line)
        if not m:
            return False
        data = {"train.loss": number(m.group(1))}
    parsed.records.append(Record("LOG", _last_epoch(parsed), data, lineno))
    return True


def parse_lines(lines, path: str = "<log>") -> ParsedLog:
    parsed = ParsedLog(path=path)
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        m = _MARKER.search(line)
        if m:
            marker, rest = m.group(1), line[m.end():].lstrip()
        elif line.startswith("INFO {"):
            marker, rest = "INFO", line[5:].lstrip()
        elif line.startswith("{"):
            marker, rest = "", line
        else:
            if not _from_print(line, lineno, parsed):
                parsed.other += 1
            continue
        if rest.startswith("{"):
            try:
                obj = json.loads(rest)
            except ValueError:
                try:
                    obj = _literal(rest)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    parsed.bad.append((lineno, "not valid JSON (partly written?)"))
                    continue
            if marker == "INFO" and isinstance(obj, dict):
                obj.setdefault("type", "INFO")
            reason = _from_json(obj, lineno, parsed)
            if reason:
                parsed.bad.append((lineno, reason))
        elif marker in ("TCAPPDLL", "DLL", "DLLL"):
            if not _from_text(rest, lineno, parsed):
                parsed.other += 1
        else:
            parsed.bad.append((lineno, "unrecognised record"))
    mark_superseded(parsed.records)
    return parsed


def mark_superseded(records: List[Record]) -> None:
    """Mark the records a resumed run redid: a run killed at step 45 and resumed from its step-25
    checkpoint logs steps 26-45 again, and the first ones no longer count.  Per rank, a step that
    goes back where a new process starts logging (after its METADATA block) supersedes every earlier
    step (and epoch) record at or after it.  Several records of one step, or ranks logging out of
    order within one process, supersede nothing."""
    kept: Dict[Any, List[Tuple[Tuple[float, float], Record]]] = {}
    fresh = False
    for r in records:
        if r.kind == "METADATA":
            fresh = True
            continue
        if r.kind != "LOG" or not isinstance(r.step, tuple) or len(r.step) not in (1, 2):
            continue
        key = (float(r.step[0]), float(r.step[1]) if len(r.step) == 2 else math.inf)
        stack = kept.setdefault(r.data.get("rank"), [])
        if len(r.step) == 2:
            if fresh and stack and key < stack[-1][0]:
                while stack and stack[-1][0] >= key:
                    stack.pop()[1].superseded = True
            fresh = False
        stack.append((key, r))


def parse_file(path) -> ParsedLog:
    """Parse one log file; an unreadable file is an :class:`ArcbenchError`."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return parse_lines(fh, path=str(path))
    except OSError as exc:
        raise ArcbenchError(f"cannot read log: {exc.strerror or exc}", path) from None
