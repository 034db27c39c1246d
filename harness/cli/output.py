"""How the commands print: JSON and tables fitted to the terminal."""
from __future__ import annotations

import re
import shutil

import click


def echo_json(obj) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, default=str))


def terminal_width() -> int:
    """The terminal's width (the COLUMNS variable first); 120 when there is no terminal."""
    return shutil.get_terminal_size((120, 24)).columns


def echo_table(rows, columns=None, keep=None, width=None, tail=("plugin",)) -> None:
    """A table fitted to the terminal the way ``arcbench report`` fits its own (see
    :mod:`arcbench.reports.fit`): columns equal on every row folded into one line, long text cut.
    ``keep``: columns never folded (default: the first); ``tail``: text whose end says most
    (module paths: ``…heads.margins``)."""
    if not rows:
        click.echo("(none)")
        return
    import pandas as pd

    from ..reports import fit

    df = pd.DataFrame(rows, columns=columns)
    numeric = {c: all(_number_like(v) for v in df[c] if v is not None) for c in df.columns}
    shown = pd.DataFrame({c: ["-" if v is None or v != v or v == "" else str(v) for v in df[c]] for c in df.columns})
    text = [c for c in df.columns if not numeric[c]]
    layout = fit.Layout(keep=tuple(keep if keep is not None else df.columns[:1]),
                        # the first column is the row's name: cut only where its end says most (module paths)
                        shrink={c: 16 if c in tail else 12 for c in text if c != df.columns[0] or c in tail},
                        soft={c: _last_two_parts for c in text if c in tail},
                        cutters={c: fit.cut_start if c in tail else fit.cut_end for c in text}, rows_are="row(s)",
                        more="--json has every field")
    click.echo(fit.fit(shown, layout, width or terminal_width(), numeric))


def _last_two_parts(text: str) -> int:
    """How short a module path gets before other text is cut: ``…heads.margins``."""
    parts = str(text).split(".")
    return len(text) if len(parts) <= 2 else 2 + len(".".join(parts[-2:]))


_NUMBER = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?(%|x)?( \(plan\))?$")


def _number_like(v) -> bool:
    """Numbers, and numbers already formatted as text ("1,204", "0.97", "12.5%", "-"), align right."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and (v == "-" or bool(_NUMBER.match(v)))
