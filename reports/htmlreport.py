"""The HTML report: one self-contained file.

Charts and the runs' own ``plots/roc.png`` are embedded as base64 ``data:``
URIs and the CSS is inline, so the file can be mailed, attached to a CI job or
opened offline; nothing is fetched.  Every piece of text from run dirs is
escaped with :func:`html.escape` (run ids and reasons are user input).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from typing import Iterable, Optional, Sequence

import pandas as pd

from .. import __version__
from . import charts, curves
from .dllog import parse_file
from .modelzoo import HEADERS, result_rows, setup_rows
from .render import display, missing
from .runs import load_system

MAX_EMBED_BYTES = 4 << 20  # a ROC image larger than this is linked by name, not embedded
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa;line-height:1.45}
header{background:#24292f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .meta{margin:0;color:#d0d7de;font-size:13px}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid #d0d7de;font-size:13px}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
main{padding:8px 28px 40px;max-width:1600px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
.badges span{display:inline-block;padding:3px 10px;border-radius:12px;margin:6px 6px 0 0;font-size:13px;
 font-weight:600}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
th.wrap{white-space:normal;min-width:160px;max-width:320px}
th .note{font-weight:400;font-size:11.5px;color:#57606a}
tbody tr:nth-child(even) td{background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:220px;max-width:460px}
.v-pass,td.v-pass{background:#dafbe1 !important;color:#116329;font-weight:600}
.v-fail,td.v-fail{background:#ffebe9 !important;color:#a40e26;font-weight:600}
.v-na,td.v-na{color:#57606a}
.v-noref,td.v-noref{background:#fff8c5 !important;color:#7d4e00}
.s-failed,.s-interrupted{color:#a40e26;font-weight:600}
.s-running,.s-unknown{color:#7d4e00}
.s-staleprocessgone{color:#b3261e}
.legend,.note{font-size:12.5px;color:#57606a;margin:6px 0 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:12px}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:6px;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12px;color:#57606a;text-align:center;margin-top:4px;word-break:break-all}
img.chart{max-width:100%;height:auto}
details{margin:6px 0}
summary{cursor:pointer;font-size:13px}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;font-size:12px;overflow-x:auto;
 margin:6px 0}
ul.problems{font-size:12.5px;color:#a40e26}
footer{font-size:12px;color:#57606a;padding:0 28px 24px}
"""

_NUMERIC = {"nproc", "nnodes", "batch_size", "epochs", "steps", "throughput_median", "amp_speedup",
            "scaling_efficiency", "peak_memory", "mfu", "lfw_accuracy", "lfw_accuracy_std", "val_at_far",
            "reference", "runs", "pass", "fail", "base_throughput", "new_throughput", "throughput_change_pct",
            "base_accuracy", "new_accuracy", "accuracy_change_points", "accuracy_change_pct", "base_runs",
            "new_runs"}


#: every core column, verdict first so it is visible without scrolling the wide table
HTML_COLUMNS = ["run_id", "reference_check", "lfw_accuracy", "reference", "status", "date", "device", "backbone",
                "precision", "nproc", "nnodes", "batch_size", "train_set", "eval_set", "synthetic",
                "throughput_median", "amp_speedup", "scaling_efficiency", "peak_memory", "mfu", "lfw_accuracy_std",
                "val_at_far", "epochs", "steps", "head"]
_WRAP = {"source", "notes", "verdict", "reason"}


def e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def verdict_class(v: str) -> str:
    v = str(v)
    if v == "PASS" or v == "ok":
        return "v-pass"
    if v == "FAIL" or v.startswith("REGRESSION"):
        return "v-fail"
    if v == "no reference":
        return "v-noref"
    return "v-na"


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img(data: Optional[bytes], alt: str, cls: str = "chart") -> str:
    if not data:
        return ""
    return f'<img class="{cls}" alt="{e(alt)}" src="{data_uri_png(data)}">'


def table_html(disp: pd.DataFrame, verdict_cols: Sequence[str] = ("reference_check", "verdict"),
               raw: Optional[pd.DataFrame] = None) -> str:
    """An escaped HTML table from :func:`render.display` output; verdict cells get colour classes."""
    head = "".join(f"<th>{e(c)}</th>" for c in disp.columns)
    body = []
    for i, rec in enumerate(disp.to_dict("records")):
        cells = []
        for c, v in rec.items():
            cls = []
            if c in _NUMERIC:
                cls.append("num")
            if c in _WRAP:
                cls.append("wrap")
            if c in verdict_cols:
                cls.append(verdict_class(v))
            if c == "status":
                cls.append("s-" + "".join(ch for ch in str(v) if ch.isalnum()))
            attr = f' class="{" ".join(cls)}"' if cls else ""
            title = ""
            hover = {"run_id": "path", "status": "reason"}.get(c)
            if raw is not None and hover in raw.columns and not missing(raw[hover].iloc[i]):
                title = f' title="{e(raw[hover].iloc[i])}"'
            cells.append(f"<td{attr}{title}>{e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _rows_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    return table_html(pd.DataFrame([[str(v) for v in r] for r in rows], columns=list(header)))


def page(title: str, body: str, meta: str = "", nav: Sequence[tuple] = ()) -> str:
    links = "".join(f'<a href="#{e(a)}">{e(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{e(title)}</h1><p class=\"meta\">{meta}</p></header>\n"
        + (f"<nav>{links}</nav>\n" if links else "")
        + f"<main>\n{body}\n</main>\n"
        f"<footer>arcbench {e(__version__)} &middot; self-contained report: no external resources.</footer>\n"
        "</body>\n</html>\n"
    )


def _section(anchor: str, title: str, inner: str) -> str:
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>\n{inner}\n</section>'


def _curves_for(row: dict):
    """(loss, accuracy, per_epoch) for a run dir or an imported log; empty frames when absent."""
    path = row.get("path")
    empty = (pd.DataFrame(columns=curves.LOSS_COLUMNS), pd.DataFrame(columns=curves.ACC_COLUMNS), False)
    if missing(path):
        return empty
    log = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(log):
        return empty
    try:
        parsed = parse_file(log)
    except Exception:  # noqa: BLE001 - a broken log must not break the whole report
        return empty
    loss, per_epoch = curves.loss_curve(parsed), False
    if not len(loss):
        loss, per_epoch = curves.epoch_loss_curve(parsed), True
    return loss, curves.accuracy_curve(parsed), per_epoch


def _roc(row: dict) -> Optional[bytes]:
    path = row.get("path")
    if missing(path) or not os.path.isdir(path):
        return None
    roc = os.path.join(path, "plots", "roc.png")
    try:
        if not os.path.isfile(roc) or os.path.getsize(roc) > MAX_EMBED_BYTES:
            return None
        with open(roc, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data if data.startswith(_PNG_MAGIC) else None


_SYSTEM_FACTS = [("device", "device"), ("device_name", "device.device_name"), ("dist_backend", "device.dist_backend"),
                 ("amp_dtype", "device.amp_dtype"), ("torch", "torch"), ("python", "python"),
                 ("cpu_model", "cpu_model"), ("host", "host"), ("world_size", "world_size"),
                 ("git_commit", "git_commit")]


def _fact(sysinfo: dict, dotted: str):
    cur = sysinfo
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    if isinstance(cur, dict):
        return cur.get("device") if dotted == "device" else json.dumps(cur, sort_keys=True)
    return cur


def systems_html(df: pd.DataFrame) -> str:
    """Distinct system descriptions (system.json) side by side, each headed by the runs that share it."""
    seen: dict = {}
    for row in df.to_dict("records"):
        if row.get("source") != "run" or missing(row.get("path")):
            continue
        sysinfo = load_system(row["path"])
        if not sysinfo:
            continue
        key = json.dumps(sysinfo, sort_keys=True, default=str)
        seen.setdefault(key, (sysinfo, []))[1].append(str(row.get("run_id")))
    if not seen:
        return '<p class="note">No run has a system.json.</p>'
    systems = list(seen.values())
    head = "<th>system</th>"
    for i, (_sysinfo, runs) in enumerate(systems, 1):
        shown = ", ".join(runs[:6]) + (f", +{len(runs) - 6} more" if len(runs) > 6 else "")
        head += f'<th class="wrap">System {i}<br><span class="note">{e(shown)}</span></th>'
    body = []
    for label, dotted in _SYSTEM_FACTS:
        vals = [_fact(sysinfo, dotted) for sysinfo, _runs in systems]
        if all(v in (None, "") for v in vals):
            continue
        body.append(f"<tr><th>{e(label)}</th>" + "".join(
            f"<td>{e('-' if v in (None, '') else v)}</td>" for v in vals) + "</tr>")
    details = "".join(
        f"<details><summary>System {i}: full system.json</summary>"
        f"<pre>{e(json.dumps(sysinfo, indent=2, default=str))}</pre></details>"
        for i, (sysinfo, _runs) in enumerate(systems, 1))
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + details)


def _counts(df: pd.DataFrame) -> str:
    checks = df["reference_check"].astype("object").fillna("") if len(df) else pd.Series([], dtype="object")
    items = [("PASS", int((checks == "PASS").sum()), "v-pass"), ("FAIL", int((checks == "FAIL").sum()), "v-fail"),
             ("no reference", int((checks == "no reference").sum()), "v-noref"),
             ("n/a", int(checks.str.startswith("n/a").sum()) if len(checks) else 0, "v-na")]
    return '<div class="badges">' + "".join(
        f'<span class="{cls}">{e(label)}: {n}</span>' for label, n, cls in items) + "</div>"


def _run_figures(df: pd.DataFrame):
    """Each run's loss/accuracy curves and ROC image as captioned ``<figure>``s (runs without one: none)."""
    figs, rocs = [], []
    for row in df.to_dict("records"):
        loss, acc, per_epoch = _curves_for(row)
        for out, png, what in ((figs, charts.run_curves(loss, acc, per_epoch_loss=per_epoch), "curves"),
                               (rocs, _roc(row), "ROC")):
            if png:
                out.append(f"<figure>{img(png, what + ' of ' + str(row.get('run_id')), 'curve')}"
                           f"<figcaption>{e(row.get('run_id'))}</figcaption></figure>")
    return figs, rocs


def build_html(df: pd.DataFrame, *, problems: Iterable[str] = (), roots: Sequence[str] = (),
               references: Optional[pd.DataFrame] = None, tolerance: float = 0.5,
               groups: Optional[pd.DataFrame] = None, lang: str = "en", title: str = "arcbench report") -> str:
    problems = list(problems)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = (f"Generated {e(now)} from {len(df)} run(s) in {e(', '.join(map(str, roots)) or '-')}; "
            f"reference tolerance {e(f'{tolerance:g}')} points.")
    h = HEADERS[lang]
    sections, nav = [], []

    def add(anchor, title_, inner):
        sections.append(_section(anchor, title_, inner))
        nav.append((anchor, title_))

    legend = ('<p class="legend">reference_check: PASS when accuracy &ge; reference &minus; tolerance; '
              'FAIL otherwise; n/a (synthetic) for generated data (never compared with real-data figures); '
              'n/a (no accuracy) for runs that did not evaluate; no reference when no published figure '
              'matches (backbone, train set, eval set); n/a (running/failed/interrupted) for runs whose accuracy '
              'is not final.</p>')
    runs_inner = _counts(df) + (table_html(display(df, HTML_COLUMNS), raw=df) if len(df)
                                else '<p class="note">No runs.</p>') + legend
    add("runs", "Runs", runs_inner)
    add("summary", "Model-zoo tables",
        f"<h3>{e(h['setup_title'])}</h3>" + _rows_table(h["setup"], setup_rows(df, lang))
        + f"<h3>{e(h['results_title'])}</h3>" + _rows_table(h["results"], result_rows(df)))
    if groups is not None:
        add("groups", "Grouped", table_html(display(groups)))

    thr = charts.throughput_by_device(df)
    add("throughput", "Throughput", img(thr, "throughput by device and backbone")
        or '<p class="note">No run recorded a throughput.</p>')
    amp = charts.amp_speedup(df)
    add("amp", "AMP speedup", img(amp, "AMP speedup") or
        '<p class="note">No run recorded an AMP speedup (run an FP32/AMP pair with arcbench bench).</p>')
    sc = charts.scaling(df)
    add("scaling", "Scaling", img(sc, "throughput against process count") or
        '<p class="note">Scaling needs runs of one configuration at two or more process counts.</p>')

    figs, rocs = _run_figures(df)
    add("curves", "Loss and accuracy curves",
        f'<div class="grid">{"".join(figs)}</div>' if figs else '<p class="note">No run logged losses.</p>')
    add("roc", "ROC curves", f'<div class="grid">{"".join(rocs)}</div>' if rocs
        else '<p class="note">No run dir holds plots/roc.png.</p>')
    if references is not None:
        ref_disp = references.copy()
        add("references", "Reference table",
            table_html(display(ref_disp, ["backbone", "train_set", "eval_set", "accuracy", "device", "cards", "amp",
                                          "batch_size", "source", "notes"]))
            + '<p class="legend">When several rows match a run, the row for the run\'s device wins, else the first '
              'listed.</p>')
    add("systems", "Systems", systems_html(df))
    if problems:
        add("problems", f"Problems ({len(problems)})",
            '<ul class="problems">' + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    return page(title, "\n".join(sections), meta, nav)


def frame_page(title: str, disp: pd.DataFrame, note: str = "", images: Sequence[tuple] = ()) -> str:
    """A small page for compare/align output: one table, a note, optional images ``(alt, png)``."""
    body = _section("result", title, table_html(disp) + (f'<p class="note">{e(note)}</p>' if note else "")
                    + "".join(img(png, alt) for alt, png in images))
    return page(title, body, e(_dt.datetime.now().strftime("%Y-%m-%d %H:%M")))
