"""Click option classes the commands share."""
from __future__ import annotations

import click

from ..errors import ArcbenchError


class RegistryOption(click.Option):
    """An option whose help lists registered names: ``{names}`` in its text, filled in from
    :func:`arcbench.registry.names` (``names_of``: device, backbone or head).

    Click fixes help strings when a command is defined, at import; the names are looked
    up only when help is shown, so importing the CLI loads no plugin (``--version`` stays
    quick) and a ``--plugin`` module's registrations appear."""

    def __init__(self, *args, names_of: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.names_of, self.template = names_of, self.help or ""

    def get_help_record(self, ctx):
        from .. import registry

        try:
            found = ", ".join(registry.names(self.names_of))
        except ArcbenchError:  # a broken plugin: help still shows, the command will say what broke
            found = f"see `arcbench {self.names_of}s`"
        self.help = self.template.format(names=found)
        return super().get_help_record(ctx)


def given_backbone(ctx, backbone):
    """``--backbone`` as the user gave it; None when it was left at its default, so that an ONNX file's
    own ``backbone`` metadata decides (a torch checkpoint still gets the default)."""
    from click.core import ParameterSource

    return None if ctx.get_parameter_source("backbone") == ParameterSource.DEFAULT else backbone


def engine_label(result: dict) -> str:
    """``engine torch`` / ``engine onnxruntime`` (+ how the file came to be) for a command's output."""
    notes = result.get("engine_notes") or []
    return f"engine {result.get('engine', 'torch')}" + (f", {'; '.join(notes)}" if notes else "")
