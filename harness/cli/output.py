"""How the commands print: JSON and plain aligned tables."""
from __future__ import annotations

import click


def echo_json(obj) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, default=str))


def echo_table(rows, columns=None) -> None:
    """A plain aligned text table (pandas is imported lazily for speed)."""
    if not rows:
        click.echo("(none)")
        return
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    click.echo(df.to_string(index=False, na_rep="-"))
