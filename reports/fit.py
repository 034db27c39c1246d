"""Fit a table of display strings to a terminal, keeping what tells the rows apart.

Every table the command line prints goes through :func:`fit`:

1. columns whose value is the same on every row are folded into one line under
   the table (``all rows: cpu, mobilefacenet, synthetic``), columns empty on
   every row into ``not recorded: ...`` -- a reader learns them once instead of
   once per row, and the width goes to the columns that differ;
2. while the table is still too wide, columns are hidden in a given order
   (``linked`` ones go together: a global batch never shows without its
   process count), a closing note names them;
3. then long text cells are cut (run ids from the date end, never through the
   mode; other text in the middle, or at the end for prose);
4. then, as a last resort, more columns go.

Numbers are never cut.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

ELLIPSIS = "\u2026"
MISSING = "-"

#: ``20261205-222808-bench-mobilefacenet-cpu-8c0a``: the date and time, the mode, then the rest
_RUN_ID = re.compile(r"^(\d{8}-\d{6}-)((?:train|bench|eval)(?:-|$))(.*)$")


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters; the middle of a long text becomes an ellipsis (keeps both ends)."""
    text = str(text)
    if len(text) <= limit:
        return text
    if limit <= 1:
        return text[:limit]
    head = limit // 2
    tail = limit - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def cut_end(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at the end (prose: the start says most)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return text[:max(0, limit - 1)] + ELLIPSIS if limit >= 1 else ""


def cut_start(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at the start (module paths: the end names the thing)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return ELLIPSIS + text[len(text) - (limit - 1):] if limit >= 1 else ""


def shorten_run_id(text: str, limit: int) -> str:
    """A generated run id cut from its date end: ``…222808-bench-mobilefacenet-cpu-8c0a``; once only
    the mode and what follows are left, what follows the mode is cut in its middle (the mode stays).
    Other ids are cut in the middle."""
    text = str(text)
    if len(text) <= limit:
        return text
    m = _RUN_ID.match(text)
    if not m:
        return cut(text, limit)
    mode, rest = m.group(2), m.group(3)
    if limit >= 1 + len(mode) + len(rest):
        return ELLIPSIS + text[len(text) - (limit - 1):]
    return ELLIPSIS + mode + cut(rest, max(1, limit - 1 - len(mode)))


def run_id_soft_limit(text: str) -> int:
    """How short a run id gets before any column is hidden: its date and time go, its mode and
    what follows stay (``…bench-mobilefacenet-cpu-8c0a``)."""
    m = _RUN_ID.match(str(text))
    return 1 + len(m.group(2)) + len(m.group(3)) if m else len(str(text))


@dataclass
class Layout:
    """How one kind of table fits: which columns stay, which go first, how cells are cut."""

    headers: Dict[str, str] = field(default_factory=dict)
    #: never folded (the row's identity and the figures the rows were made for)
    keep: Sequence[str] = ()
    #: hidden first, before any text is cut (what other columns already say, e.g. the date a run id holds)
    first: Sequence[str] = ()
    #: hidden in this order while the table is too wide (after the soft cuts)
    hide: Sequence[str] = ()
    #: hidden only after text was cut as far as it goes
    last_resort: Sequence[str] = ()
    #: text columns that may be cut, and the width they keep at least
    shrink: Dict[str, int] = field(default_factory=dict)
    #: how a column's cells are cut (default: in the middle)
    cutters: Dict[str, Callable[[str, int], str]] = field(default_factory=dict)
    #: text columns cut before any column is hidden, down to the longest of ``f(cell)`` over their cells
    soft: Dict[str, Callable[[str], int]] = field(default_factory=dict)
    #: columns whose folded value reads alone ("cpu"); others read "header value" ("batch 16")
    bare: Sequence[str] = ()
    #: how a folded column is named when its header is too terse to stand alone ("r" -> "sample rate")
    fold_names: Dict[str, str] = field(default_factory=dict)
    #: groups of columns that are hidden (and folded) together
    linked: Sequence[Tuple[str, ...]] = ()
    rows_are: str = "row(s)"
    more: str = ""

    def header(self, c: str) -> str:
        return self.headers.get(c, c)


def constant_columns(d: pd.DataFrame, keep: Sequence[str]) -> List[str]:
    """Columns (not in ``keep``) whose display value is the same on every row; none for a single row."""
    if len(d) < 2:
        return []
    return [c for c in d.columns if c not in keep and d[c].nunique(dropna=False) == 1]


def _fold_line(d: pd.DataFrame, folded: Sequence[str], layout: Layout) -> List[str]:
    same, empty = [], []
    for c in folded:
        v = str(d[c].iloc[0])
        if v == MISSING:
            empty.append(layout.header(c))
        else:
            same.append(v if c in layout.bare else f"{layout.fold_names.get(c, layout.header(c))} {v}")
    parts = []
    if same:
        parts.append("all rows: " + ", ".join(same))
    if empty:
        parts.append("not recorded: " + ", ".join(empty))
    return ["; ".join(parts)] if parts else []


def _widths(d: pd.DataFrame, layout: Layout) -> List[int]:
    return [max([len(layout.header(c))] + [len(v) for v in d[c]]) for c in d.columns]


def width_of(d: pd.DataFrame, layout: Layout, gap: int = 2) -> int:
    """Characters one line of the table takes, with its headers."""
    w = _widths(d, layout)
    return sum(w) + gap * max(0, len(w) - 1)


def _group(c: str, layout: Layout) -> Tuple[str, ...]:
    for g in layout.linked:
        if c in g:
            return g
    return (c,)


def _hide(d: pd.DataFrame, order: Sequence[str], width: int, layout: Layout, hidden: List[str]) -> pd.DataFrame:
    for c in order:
        if width_of(d, layout) <= width:
            break
        group = [g for g in _group(c, layout) if g in d.columns]
        if c in d.columns and len(d.columns) > len(group):
            d = d.drop(columns=group)
            hidden.extend(group)
    return d


def _shrink(d: pd.DataFrame, width: int, layout: Layout, full: Dict[str, list], soft: bool = False) -> pd.DataFrame:
    """Cut long text cells (from their ``full`` text) until the table fits or every one is at its
    floor (``soft``: only the :attr:`Layout.soft` columns, to their soft floor)."""
    full = {c: v for c, v in full.items() if c in d.columns and (c in layout.soft or not soft)}
    limits = {c: max(len(v) for v in d[c]) for c in full}
    while width_of(d, layout) > width:
        floors = {c: max(layout.shrink.get(c, 1), len(layout.header(c)),
                         max(layout.soft[c](v) for v in vals) if soft else 0) for c, vals in full.items()}
        cands = [(limits[c], c) for c in full if limits[c] > floors[c]]
        if not cands:
            break
        n, c = max(cands)
        over = width_of(d, layout) - width
        limits[c] = max(floors[c], n - max(1, min(over, 4)))
        cutter = layout.cutters.get(c, cut)
        d[c] = [cutter(v, limits[c]) for v in full[c]]
    return d


def render(d: pd.DataFrame, layout: Layout, numeric: Dict[str, bool], gap: int = 2) -> List[str]:
    widths = _widths(d, layout)
    nums = [numeric.get(c, False) for c in d.columns]

    def line(cells):
        parts = [(v.rjust(w) if num else v.ljust(w)) for v, w, num in zip(cells, widths, nums)]
        return (" " * gap).join(parts).rstrip()

    return [line([layout.header(c) for c in d.columns])] + [line(r) for r in d.itertuples(index=False, name=None)]


def fit(d: pd.DataFrame, layout: Layout, width: Optional[int], numeric: Optional[Dict[str, bool]] = None,
        fold: bool = True) -> str:
    """``d`` (display strings, one column per field) as text at most ``width`` wide (None: no limit)."""
    numeric = numeric or {}
    d = d.copy()
    notes: List[str] = []
    if fold:
        folded = constant_columns(d, layout.keep)
        # a linked column folds only with its partners, or it stays beside them
        folded = [c for c in folded if all(g in folded or g not in d.columns for g in _group(c, layout))]
        if folded and len(folded) < len(d.columns):
            notes = _fold_line(d, folded, layout)
            d = d.drop(columns=folded)
    hidden: List[str] = []
    if width:
        full = {c: list(d[c]) for c in d.columns if c in layout.shrink or c in layout.soft}
        d = _hide(d, layout.first, width, layout, hidden)
        d = _shrink(d, width, layout, full, soft=True)
        d = _hide(d, layout.hide, width, layout, hidden)
        d = _shrink(d, width, layout, full)
        d = _hide(d, layout.last_resort, width, layout, hidden)
    lines = render(d, layout, numeric)
    wrap = max(20, width or 0) if width else None
    for note in notes:
        lines += textwrap.wrap(note, width=wrap, subsequent_indent="  ") if wrap else [note]
    if hidden:
        more = f"; {layout.more}" if layout.more else ""
        note = f"({len(d)} {layout.rows_are}; hidden to fit {width} columns: {', '.join(hidden)}{more})"
        lines += textwrap.wrap(note, width=wrap) if wrap else [note]
    return "\n".join(lines)
