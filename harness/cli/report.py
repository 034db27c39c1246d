"""`arcbench report`: aggregate run dirs, check them against published accuracies, align and compare runs.

The work lives in :mod:`arcbench.reports` (each mode's runs and text in
:mod:`arcbench.reports.modes`); this module only parses options, picks the mode
(report, ``--align`` or ``--compare``), writes the files and prints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import click

from ..record import atomic
from ..errors import ArcbenchError

DEFAULT_RUNS = "runs"
DEFAULT_HTML = "arcbench-report.html"


def _emit(text: str, out: Optional[str]) -> None:
    if out:
        out = os.path.abspath(out)
        atomic.write_text(out, text)
        _share(out)
        click.echo(out)
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _share(path: str) -> None:
    """atomic writes create 0600 files (mkstemp); a report is meant to be read by others: apply the umask."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def _warn(problems: List[str]) -> None:
    for p in problems:
        click.echo(f"arcbench: warning: {p}", err=True)


def _roots(runs_dirs: Tuple[str, ...], optional: bool) -> List[str]:
    """The runs roots: as given, else ./runs (which may be absent only when ``optional``)."""
    if runs_dirs:
        return list(runs_dirs)
    if os.path.isdir(DEFAULT_RUNS):
        return [DEFAULT_RUNS]
    if optional:
        return []
    raise ArcbenchError("runs directory not found (give RUNS_DIR, or run `arcbench run` first)", DEFAULT_RUNS)


def _generated_dir(candidates) -> str:
    """Where a generated file goes by default: the first runs directory given or found, else the current one."""
    for c in candidates:
        if c and os.path.isdir(c):
            return os.path.abspath(c)
    return os.getcwd()


def _columns(spec: Optional[str], df) -> Optional[List[str]]:
    """--columns: None (the default dozen), every column ('all'), or the named ones, checked."""
    if not spec:
        return None
    if spec.strip().lower() == "all":
        return list(df.columns)
    cols = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in cols if c not in df.columns]
    if not cols or unknown:
        raise ArcbenchError(f"--columns: unknown column(s) {', '.join(unknown) or '(none given)'}; "
                            f"known: {', '.join(df.columns)}")
    return cols


def _terminal_width() -> int:
    from .output import terminal_width

    return terminal_width()


@click.command("report", context_settings={"max_content_width": 100})
@click.argument("runs_dirs", nargs=-1, type=click.Path(), metavar="[RUNS_DIR]...")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json", "html"]), default="table",
              show_default=True,
              help="table: the key columns, fitted to the terminal width; md: the model-zoo README "
                   "setup/results tables plus the runs table; csv/json: every column; html: one self-contained "
                   "file with charts.")
@click.option("--columns", "columns_spec", metavar="all|COLS",
              help="Columns of the table (and csv/json): 'all', or comma-separated names as in the csv header, "
                   "e.g. run_id,throughput_median,latency_p95. Default: about a dozen key columns.")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"Write here (atomically) and print its absolute path. Default: stdout; for html "
                   f"RUNS_DIR/{DEFAULT_HTML} (the first runs directory; for --compare the NEW one; the current "
                   f"directory when there is none).")
@click.option("--group-by", metavar="COLS",
              help="Comma-separated columns (e.g. device,backbone): one row per group with run count, median "
                   "throughput, mean accuracy, median AMP speedup, max memory, PASS/FAIL counts.")
@click.option("--tolerance", type=float, default=0.5, show_default=True, metavar="POINTS",
              help="A run PASSes when its LFW accuracy >= reference - POINTS. Also the accuracy-drop limit "
                   "of --compare.")
@click.option("--threshold", type=float, default=5.0, show_default=True, metavar="PCT",
              help="--compare flags a regression when the 95% bootstrap interval of the throughput ratio "
                   "(per-step times, runs of a configuration pooled) lies wholly beyond a PCT percent drop; "
                   "inconclusive when it straddles it.")
@click.option("--check", is_flag=True,
              help="Exit 1 when any run FAILs its reference, the --align verdict is FAIL, or --compare finds a "
                   "regression (exit 2 stays for usage errors).")
@click.option("--align", nargs=2, metavar="RUN_A RUN_B", default=None,
              help="Loss alignment (SDAA model-zoo rule): mean relative error |a-b|/|b| with RUN_B the baseline, "
                   "and mean absolute error; PASS when MRE <= 5% or MAE <= 2e-4. Each is a run dir, a run id "
                   "under RUNS_DIR, or a DLLL/TCAPPDLL log file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="PNG for --align. Default: align_<A>_vs_<B>.png in RUNS_DIR (the first runs directory "
                   "given, or ./runs), else in the current directory. The absolute path is printed.")
@click.option("--compare", nargs=2, metavar="BASE NEW", default=None,
              help="Compare two runs dirs (or run dirs, or log files) configuration by configuration on "
                   "device, backbone, head, precision, AMP dtype, compile, nproc, batch_size, input_size, "
                   "train/eval set (and num_classes, sample_rate when recorded); runs of different "
                   "epochs/steps are reported as not comparable.")
@click.option("--import-log", "import_logs", multiple=True, type=click.Path(), metavar="FILE",
              help="Add a DLLL/TCAPPDLL training log (e.g. an SDAA model-zoo log) to the report (repeatable).")
@click.option("--import-meta", multiple=True, metavar="KEY=VALUE",
              help="Set what an imported log does not say, e.g. backbone=mobilefacenet (repeatable).")
@click.option("--import-to", type=click.Path(file_okay=False), metavar="RUNS_DIR",
              help="Also write each imported log as a run dir under RUNS_DIR, so later reports include it.")
@click.option("--references", "references_path", type=click.Path(dir_okay=False), metavar="CSV",
              help="Use this reference table instead of the shipped one (same columns as references.csv).")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="Headers of the model-zoo tables in md/html: English, or the README's Chinese.")
@click.pass_context
def report(ctx, runs_dirs, fmt, columns_spec, out, group_by, tolerance, threshold, check, align, plot_path, compare,
           import_logs, import_meta, import_to, references_path, lang):
    """Report on run dirs (default ./runs): one row per run, checked against published LFW accuracies.

    \b
    Verdicts (reference_check):
      PASS / FAIL          real-data run vs the matching reference, within --tolerance points
      n/a (synthetic)      generated data is never compared with a real-data figure
      n/a (no accuracy)    the run did not evaluate (e.g. a bench run, synthetic data or not)
      no reference         no published figure for (backbone, train set, eval set)
      n/a (running) ...    the run is not finished, so its accuracy is not final

    \b
    Modes: the default report, --align RUN_A RUN_B, or --compare BASE NEW.
    Exit status: 0 ok; 1 a --check failed; 2 a usage or input error.
    """
    _check_options(align, compare, tolerance, threshold, plot_path)
    from ..reports import importlog
    from ..reports.reference import load_references

    req = _Request(runs_dirs=runs_dirs, fmt=fmt, columns_spec=columns_spec, out=out, group_by=group_by,
                   tolerance=tolerance, threshold=threshold, check=check, plot_path=plot_path,
                   import_logs=import_logs, import_to=import_to, lang=lang,
                   meta=importlog.parse_meta(import_meta), refs=load_references(references_path))
    if columns_spec and (align or compare or fmt not in ("table", "csv", "json")):
        raise ArcbenchError("--columns applies to the runs table in table, csv and json formats")
    if align:
        failed = _align_mode(req, *align)
    elif compare:
        failed = _compare_mode(req, *compare)
    else:
        failed = _runs_mode(req)
    if failed:
        ctx.exit(1)


def _check_options(align, compare, tolerance: float, threshold: float, plot_path) -> None:
    """Refuse option combinations that make no sense, before any run is read."""
    if align and compare:
        raise ArcbenchError("--align and --compare are separate modes; give one")
    if tolerance < 0:
        raise ArcbenchError(f"--tolerance must be >= 0, got {tolerance:g}")
    if threshold < 0:
        raise ArcbenchError(f"--threshold must be >= 0, got {threshold:g}")
    if plot_path and not align:
        raise ArcbenchError("--plot applies to --align only")


@dataclass
class _Request:
    """The parsed options, so each mode takes one argument instead of seventeen."""

    runs_dirs: Tuple[str, ...]
    fmt: str
    columns_spec: Optional[str]
    out: Optional[str]
    group_by: Optional[str]
    tolerance: float
    threshold: float
    check: bool
    plot_path: Optional[str]
    import_logs: Tuple[str, ...]
    import_to: Optional[str]
    lang: str
    meta: dict
    refs: object
    problems: List[str] = field(default_factory=list)

    def out_path(self, candidates) -> Optional[str]:
        """--out, or for html (which is never printed to stdout) a file in the first existing candidate."""
        if self.fmt == "html" and not self.out:
            return os.path.join(_generated_dir(candidates), DEFAULT_HTML)
        return self.out


def _fail_check(message: str) -> bool:
    click.echo(f"arcbench: check failed: {message}", err=True)
    return True


# --align

def _align_mode(req: _Request, spec_a: str, spec_b: str) -> bool:
    """--align RUN_A RUN_B: write the plot, emit the verdict; True when --check fails."""
    from ..reports import align as align_mod
    from ..reports import modes

    roots = _roots(req.runs_dirs, optional=True)
    result = modes.align_runs(spec_a, spec_b, roots, req.meta, req.problems)
    png = align_mod.plot_png(result)
    plot_path = os.path.abspath(req.plot_path or os.path.join(
        _generated_dir(roots), align_mod.default_plot_name(result.label_a, result.label_b)))
    out = req.out_path(roots)
    atomic.write_bytes(plot_path, png)
    _share(plot_path)
    _warn(req.problems)
    _emit(modes.align_text(result, req.fmt, plot_path, png), out)
    if req.check and not result.passed:
        return _fail_check(f"loss alignment {result.verdict}")
    return False


# --compare

def _compare_mode(req: _Request, base_spec: str, new_spec: str) -> bool:
    """--compare BASE NEW: one row per configuration; True when --check finds a regression."""
    from ..reports import compare as compare_mod
    from ..reports import modes

    result = modes.compare_runs(base_spec, new_spec, req.refs, req.threshold, req.tolerance, req.meta,
                                req.problems)
    out = req.out_path([new_spec, base_spec])
    line = compare_mod.summary_line(result, req.threshold, req.tolerance)
    _warn(req.problems)
    _emit(modes.compare_text(result, req.fmt, base_spec, new_spec, line, req.threshold, req.tolerance,
                             _terminal_width()), out)
    if req.check and result["regression"].any():
        return _fail_check(line)
    return False


# the default report

def _runs_mode(req: _Request) -> bool:
    """The runs table (or its groups) in the chosen format; True when --check finds a FAIL."""
    from ..reports import modes, render

    roots = _roots(req.runs_dirs, optional=bool(req.import_logs))
    df = modes.load_report_runs(roots, req.import_logs, req.import_to, req.meta, req.problems, req.refs,
                                req.tolerance)
    groups = render.group_runs(df, req.group_by.split(",")) if req.group_by else None
    cols = _columns(req.columns_spec, groups if groups is not None else df)
    out = req.out_path(roots + ([req.import_to] if req.import_to else []))
    every_column = bool(req.columns_spec) and req.columns_spec.strip().lower() == "all"
    text = modes.runs_text(df, groups, cols, req.fmt, problems=req.problems, sources=roots + list(req.import_logs),
                           refs=req.refs, tolerance=req.tolerance, lang=req.lang, width=_terminal_width(),
                           every_column=every_column)
    _warn(req.problems)
    _emit(text, out)
    return _check_runs(df) if req.check else False


def _check_runs(df) -> bool:
    """--check on the runs: a FAIL anywhere fails; otherwise say how many passed."""
    from ..reports import modes

    failed, n_pass = modes.runs_check(df)
    if failed:
        return _fail_check(f"{len(failed)} run(s) below reference: {', '.join(failed)}")
    click.echo(f"arcbench: check passed: {n_pass} PASS, 0 FAIL", err=True)
    return False
