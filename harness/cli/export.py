"""`arcbench export`: a backbone's weights to an ONNX file, checked against torch before it is kept."""
from __future__ import annotations

import os

import click

from .output import echo_json
from .options import RegistryOption


def torch_version() -> str:
    import torch

    return torch.__version__


@click.command("export")
@click.option("--backbone", default="mobilefacenet", show_default=True, cls=RegistryOption, names_of="backbone",
              help="Backbone plugin: {names}.")
@click.option("--weights", required=True, type=click.Path(dir_okay=False),
              help="Backbone weights: a state dict, an arcbench checkpoint or export, or the reference .pth.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(min=7), help="ONNX opset version.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: a half-precision graph (input and weights) for accelerators.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="torch's exporter: auto = dynamo where this torch has it and onnxscript is installed, "
                   "else torchscript.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run ONNX Runtime (CPU) and torch on the same faces and refuse a file whose unit embeddings "
                   "differ by more than 1e-4 (fp32) or 1e-2 (fp16).")
@click.option("--check-images", multiple=True, type=click.Path(exists=True),
              help="Face photos (files or folders) for --check [default: generated synthetic faces].")
@click.option("--check-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="At most this many images in the check batch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: out, exporter, opset, dtype, max_abs_diff, bound.")
@click.pass_context
def export_cmd(ctx, backbone, weights, out, opset, dtype, exporter, check, check_images, check_batch, as_json):
    """Export BACKBONE with WEIGHTS to ONNX for deployment.

    The graph is the one evaluation runs (conv+BatchNorm folded where the backbone allows),
    input `input` (N, 3, S, S) with a dynamic batch, output `embedding` (N, D) before L2
    normalisation. The file's metadata_props say how to feed it: backbone, input size,
    preprocessing (RGB, bicubic letterbox onto grey, (x/255-0.5)/0.5), embedding size, the
    weights' sha256 and arcbench's version. Exported with torch's dynamo-based exporter where
    available, else the TorchScript-based one (the output says which).

    \b
    Examples:
      arcbench export --weights arcface_mobilefacenet.pth --out mobilefacenet.onnx
      arcbench export --backbone iresnet50 --weights backbone.pth --out r50_fp16.onnx --dtype fp16
    """
    from .. import registry
    from ..inference.weights import load_backbone
    from ..inference.engines import open_onnx
    from ..errors import ArcbenchError
    from ..inference.onnx_export import (backbone_metadata, bound_for, check_images as faces, export_module,
                               exporter_name, max_difference, require)

    require("onnx")
    ort = require("onnxruntime")
    if exporter == "auto":
        exporter = exporter_name()
    elif exporter == "dynamo" and exporter_name() != "dynamo":
        raise ArcbenchError(f"the dynamo-based exporter needs torch>=2.5 with dynamo= in torch.onnx.export and "
                            f"onnxscript installed (torch {torch_version()}); use --exporter torchscript")
    debug = bool(os.environ.get("ARCBENCH_DEBUG") or (ctx.obj or {}).get("debug"))
    spec = registry.get_backbone(backbone)
    batch = label = None
    if check:  # decode first: a typo in a photo's name should not wait for the export
        batch, label = faces(spec.input_size, check_images, check_batch)
    model = load_backbone(backbone, weights).eval()
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ArcbenchError("the folder to write into does not exist", folder)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.{os.getpid()}.tmp")
    try:
        info = export_module(model, tmp, input_size=spec.input_size, fold_bn=spec.fold_bn, opset=opset, dtype=dtype,
                             metadata=backbone_metadata(backbone, spec, weights, dtype), name=backbone,
                             exporter=exporter, debug=debug)
        diff = bound = None
        if check:
            module, _, _ = open_onnx(tmp, registry.require_device("cpu"))
            diff, bound = max_difference(model, module, batch), bound_for(dtype)
            del module
            if not diff <= bound:
                raise ArcbenchError(f"not kept: ONNX Runtime's unit embeddings differ from torch's by up to "
                                    f"{diff:.3g}, above the {dtype} bound {bound:g} ({label})", out)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    size = os.path.getsize(out)
    result = {"out": out, "backbone": backbone, "exporter": info["exporter"], "opset": info["opset"], "dtype": dtype,
              "bytes": size, "export_seconds": round(info["seconds"], 2), "max_abs_diff": diff, "bound": bound,
              "check_images": label, "onnxruntime": ort.__version__}
    if as_json:
        echo_json(result)
        return
    click.echo(f"exported {backbone} -> {out}  ({info['exporter']} exporter, opset {info['opset']}, {dtype}, "
               f"{size / 2**20:.1f} MiB, {info['seconds']:.1f} s)")
    if check:
        click.echo(f"check: max |torch - onnxruntime| over unit embeddings {diff:.2e} <= {bound:g} "
                   f"on {label} (onnxruntime {ort.__version__}, CPU)")
    else:
        click.echo("check: skipped (--no-check)")
