"""The ``arcbench`` command line (click).

Each sub-command lives in its own module in this package; :data:`main`
adds them (they never import it, so no module imports back into this one).  Errors a user can cause are :class:`ArcbenchError`: they are
printed as one line and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import os
import sys
import warnings

import click

from .. import __version__
from ..errors import ArcbenchError, file_system_error, one_line_warning


class _Group(click.Group):
    def invoke(self, ctx):
        saved_format = warnings.formatwarning
        if not (_debug(ctx) or ctx.params.get("debug")):
            warnings.formatwarning = one_line_warning
        try:
            return super().invoke(ctx)
        except ArcbenchError as exc:
            if _debug(ctx):
                raise
            click.echo(f"arcbench: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("arcbench: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # stdout went away (`arcbench ... | head`): stop quietly, like other command-line tools
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(1)
        except Exception as exc:
            if _debug(ctx):
                raise
            # a read-only place, a missing permission, a full disk: the user's to fix, one line naming the path
            err = file_system_error(exc)
            if err is not None:
                click.echo(f"arcbench: error: {err}", err=True)
                sys.exit(err.exit_code)
            # a bug, not bad input: still one line; --debug shows the traceback
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"arcbench: internal error: {type(exc).__name__}: {first} "
                       "(run with --debug for the traceback)", err=True)
            sys.exit(1)
        finally:
            warnings.formatwarning = saved_format


def _debug(ctx) -> bool:
    return bool(os.environ.get("ARCBENCH_DEBUG") or (ctx.obj or {}).get("debug"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="arcbench")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("--plugin", "plugin_modules", multiple=True, metavar="MODULE",
              help="Import and register an extra plugin module (repeatable). Plugins otherwise load "
                   "only from the 'arcbench' entry-point group.")
@click.pass_context
def main(ctx, debug, plugin_modules):
    """Train, verify and benchmark ArcFace face recognition on any PyTorch device.

    Start with `arcbench run` (trains on an embedded synthetic data set, no download),
    then `arcbench report runs/`.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        os.environ["ARCBENCH_DEBUG"] = "1"  # worker processes inherit it
    from .. import plugin_manager

    for mod in plugin_modules:
        plugin_manager.load_plugin_module(mod)


from . import bench, data, eval, export, ijb, info, report, run, verify  # noqa: E402  (they import nothing from here)

for _command in (run.run_cmd, eval.eval_cmd, ijb.eval_ijb_cmd, verify.verify_cmd, bench.bench_cmd, report.report, data.data,
                 info.plugins_cmd, info.devices_cmd, info.backbones_cmd, info.heads_cmd, export.export_cmd):
    main.add_command(_command)
