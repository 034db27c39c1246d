"""The three modes of ``arcbench report``, without the command line: which runs each reads, and its text.

* the default report: :func:`load_report_runs` (run dirs plus imported logs),
  :func:`runs_text` in each format, :func:`runs_check` for ``--check``;
* ``--align RUN_A RUN_B``: :func:`align_runs` (each a log file, a run dir or a
  run id, see :func:`resolve_run`), :func:`align_text`;
* ``--compare BASE NEW``: :func:`compare_runs` (each a runs dir, a run dir or a
  log file, see :func:`load_side`), :func:`compare_text`.

These take plain values and return frames, results or text; ``arcbench.cli.report``
parses the options, writes the files and prints.
"""
from __future__ import annotations

import os
import textwrap
from typing import List, Optional, Sequence, Tuple

import pandas as pd

from ..errors import ArcbenchError
from . import align as align_mod
from . import compare as compare_mod
from . import htmlreport, importlog, modelzoo, render, runs
from .curves import load_loss_curve


# where the runs come from

def resolve_run(spec: str, roots: List[str], meta: dict, problems: List[str]) -> Tuple[str, pd.DataFrame]:
    """RUN_A/RUN_B/BASE/NEW: a log file, a run dir, or a run id under the roots -> (label, loss curve)."""
    if os.path.isfile(spec):
        imp = importlog.import_log(spec, meta, problems)
        return imp.row["run_id"], imp.loss
    if os.path.isdir(spec):
        if not runs.is_run_dir(spec):
            raise ArcbenchError("not a run dir (no summary.json or config.json)", spec)
        return run_label(spec), load_loss_curve(spec)
    hits = [d for d in runs.discover(roots)
            if os.path.basename(os.path.normpath(d)) == spec or run_label(d) == spec]
    if not hits:
        where = ", ".join(roots) or "(no runs dir)"
        raise ArcbenchError(f"no run dir, log file or run id {spec!r} under {where}")
    if len(hits) > 1:
        raise ArcbenchError(f"run id {spec!r} is ambiguous: {', '.join(hits)}")
    return run_label(hits[0]), load_loss_curve(hits[0])


def run_label(run_dir: str) -> str:
    """A run dir's run id (from summary.json, else config.json), else its folder name."""
    for name in ("summary.json", "config.json"):
        obj, _err = runs.read_json(os.path.join(run_dir, name))
        if obj and obj.get("run_id"):
            return str(obj["run_id"])
    return os.path.basename(os.path.normpath(run_dir))


def load_side(spec: str, refs, tolerance: float, meta: dict, problems: List[str]) -> pd.DataFrame:
    """BASE or NEW of --compare: the runs of a runs dir or run dir, or a log file imported as one run."""
    if os.path.isfile(spec):
        imp = importlog.import_log(spec, meta, problems)
        return runs.load_runs([], problems, refs, tolerance, extra_rows=[imp.row])
    return runs.load_runs([spec], problems, refs, tolerance)


def load_report_runs(roots: List[str], import_logs: Sequence[str], import_to: Optional[str], meta: dict,
                     problems: List[str], refs, tolerance: float) -> pd.DataFrame:
    """The runs under ``roots`` plus the imported logs (written as run dirs under ``import_to`` first, if given)."""
    extra_rows, materialised = [], []
    for path in import_logs:
        imp = importlog.import_log(path, meta, problems)
        if import_to:
            materialised.append(importlog.materialise(imp, import_to))
        else:
            extra_rows.append(imp.row)
    df = runs.load_runs(roots + materialised, problems, refs, tolerance, extra_rows=extra_rows)
    if not len(df):
        problems.append(f"no run dirs (folders with summary.json or config.json) under {', '.join(roots) or '-'}")
    return df


# --align

def align_runs(spec_a: str, spec_b: str, roots: List[str], meta: dict, problems: List[str]) -> align_mod.AlignResult:
    """Resolve both runs and align their loss curves; equal labels become "<label> (A)" and "<label> (B)"."""
    label_a, curve_a = resolve_run(spec_a, roots, meta, problems)
    label_b, curve_b = resolve_run(spec_b, roots, meta, problems)
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
    return align_mod.align(curve_a, curve_b, label_a, label_b)


def align_text(result: align_mod.AlignResult, fmt: str, plot_path: str, png: bytes) -> str:
    """The alignment in ``fmt``, naming (md, html: showing) the plot written to ``plot_path``."""
    if fmt == "json":
        return render.to_json({**result.to_dict(), "plot": plot_path})
    if fmt == "csv":
        a = result.aligned.copy()
        a["abs_error"] = (a["loss_a"] - a["loss_b"]).abs()
        a["rel_error"] = a["abs_error"] / a["loss_b"].abs().where(a["loss_b"] != 0)
        return render.to_csv(a)
    metrics = [[k, "-" if v is None else v] for k, v in result.to_dict().items()]
    if fmt == "md":
        return render.md_table(["metric", "value"], metrics) + f"\n\n![loss alignment]({plot_path})\n"
    if fmt == "html":
        d = pd.DataFrame(metrics, columns=["metric", "value"])
        return htmlreport.frame_page("arcbench loss alignment", d.astype(str), result.text(),
                                     [("loss alignment", png)])
    return result.text() + f"\nplot: {plot_path}\n"


# --compare

def compare_runs(base_spec: str, new_spec: str, refs, threshold: float, tolerance: float, meta: dict,
                 problems: List[str]) -> pd.DataFrame:
    """BASE vs NEW, one row per configuration (see :func:`arcbench.reports.compare.compare`)."""
    base = load_side(base_spec, refs, tolerance, meta, problems)
    new = load_side(new_spec, refs, tolerance, meta, problems)
    return compare_mod.compare(base, new, threshold, tolerance)


def compare_text(result: pd.DataFrame, fmt: str, base_spec: str, new_spec: str, line: str, threshold: float,
                 tolerance: float, width: int) -> str:
    """The comparison in ``fmt``; ``line`` is its summary line, ``width`` the terminal's (for the table)."""
    if fmt == "json":
        return render.to_json({"base": base_spec, "new": new_spec, "threshold_pct": threshold,
                               "tolerance_points": tolerance, "summary": line,
                               "regressions": int(result["regression"].sum()),
                               "inconclusive": int(result["inconclusive"].sum()),
                               "configurations": render.jsonable(result)})
    if fmt == "csv":
        return render.to_csv(result)
    if fmt == "md":
        return f"# arcbench compare\n\nBASE `{base_spec}` vs NEW `{new_spec}`: {line}\n\n" \
               + (render.md_frame(result) if len(result) else "(no runs)") + "\n"
    if fmt == "html":
        return htmlreport.frame_page("arcbench compare", render.display(result),
                                     f"BASE {base_spec} vs NEW {new_spec}: {line}")
    shown = compare_mod.table(result)
    return (render.fit_table(shown, list(shown.columns), width, drop=compare_mod.TABLE_DROP_ORDER,
                             rows_are="configuration(s)", more="--format csv or json has every column",
                             keep=compare_mod.TABLE_KEEP)
            if len(result) else "(no runs)") + "\n" + textwrap.fill(line, width) + "\n"


# the default report

def runs_text(df: pd.DataFrame, groups: Optional[pd.DataFrame], cols: Optional[List[str]], fmt: str, *,
              problems: List[str], sources: List[str], refs, tolerance: float, lang: str, width: int,
              every_column: bool) -> str:
    """The runs (or their ``groups``) in ``fmt``: ``cols`` as --columns chose them (None: the default),
    ``width`` the terminal's, ``every_column`` for --columns all (the table is then not fitted)."""
    frame = groups if groups is not None else df
    if fmt == "html":
        return htmlreport.build_html(df, problems=problems, roots=sources, references=refs,
                                     tolerance=tolerance, groups=groups, lang=lang)
    if fmt == "json":
        body = {"runs": render.jsonable(df if cols is None or groups is not None else df[cols]),
                "problems": problems}
        if groups is not None:
            body["groups"] = render.jsonable(groups if cols is None else groups[cols])
        return render.to_json(body)
    if fmt == "csv":
        return render.to_csv(frame if cols is None else frame[cols])
    if fmt == "md" and groups is not None:
        return "# arcbench report (grouped)\n\n" + render.md_frame(groups) + "\n"
    if fmt == "md":
        note = f"{len(df)} run(s) from {', '.join(sources)}; reference tolerance {tolerance:g} points."
        return modelzoo.markdown(df, lang=lang, note=note)
    if groups is not None:
        return render.fit_table(groups, cols or list(groups.columns), width, keep=render.GROUP_METRICS,
                                fold=not cols)
    if every_column:
        return render.fit_table(df, cols, None, fold=False)
    # columns named with --columns are shown as asked; the default ones are fitted by what they tell
    return render.fit_table(df, cols, width, drop=() if cols else render.TABLE_DROP_ORDER, fold=not cols) \
        + stale_notes(df)


def stale_notes(df: pd.DataFrame) -> str:
    """One line per run whose process is gone, with the command that continues it."""
    lines = [f"\n{r['run_id']}: {runs.STALE}; resume with: {runs.resume_command(r['path'])}"
             for r in df.to_dict("records") if r.get("status") == runs.STALE and r.get("path")]
    return "".join(lines)


def runs_check(df: pd.DataFrame) -> Tuple[List[str], int]:
    """--check on the runs: the ids of the runs that FAIL their reference, and how many PASS."""
    checks = df["reference_check"].astype("object") if len(df) else []
    failed = [str(r) for r, c in zip(df["run_id"], checks) if c == "FAIL"] if len(df) else []
    return failed, sum(1 for c in checks if c == "PASS")
