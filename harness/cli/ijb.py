"""`arcbench eval-ijb`: IJB-B / IJB-C 1:1 template verification (TAR at FAR) of a backbone's weights."""
from __future__ import annotations

import os

import click

from .options import RegistryOption
from .output import echo_json


@click.command("eval-ijb")
@click.option("--root", required=True, type=click.Path(file_okay=False),
              help="The IJB-B/C folder: meta/<prefix>_face_tid_mid.txt, _name_5pts_score.txt, "
                   "_template_pair_label.txt, and loose_crop/.")
@click.option("--backbone", "--model_name", "backbone", default="mobilefacenet", show_default=True,
              cls=RegistryOption, names_of="backbone", help="Backbone plugin: {names}.")
@click.option("--weights", "--model_path", "weights", required=True, type=click.Path(dir_okay=False),
              help="Backbone weights: a state dict, an arcbench checkpoint or export, or the reference .pth.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where the embeddings cache, result.json, tar_far.csv and roc.png go "
                   "[default: ijb/<set>-<backbone>].")
@click.option("--resume", is_flag=True,
              help="Reuse the embeddings cached in --out by an interrupted or earlier evaluation "
                   "(only if made with the same weights and settings).")
@click.option("--detector-score/--no-detector-score", default=True, show_default=True,
              help="Weigh each face by its detector score (insightface's reported variant, D1).")
@click.option("--unit-faces", is_flag=True,
              help="L2-normalise each face before pooling (N0); default keeps the embedding norm (N1).")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Add the mirror image's embedding to each face's (F1).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1), help="Faces per forward pass.")
@click.option("--device", default="auto", show_default=True, cls=RegistryOption, names_of="device",
              help="Device plugin name, or 'auto' (the first available of {names}).")
@click.option("--amp/--no-amp", default=False, show_default=True, help="Autocast the forward pass.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Crop-decoding and alignment worker processes [default: up to cores-1, max 8].")
@click.option("--save-scores", is_flag=True, help="Also write scores.csv: template1,template2,label,score per pair.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar over the faces on stderr (only when it is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_ijb_cmd(root, backbone, weights, out_dir, resume, detector_score, unit_faces, flip, batch_size, device,
                 amp, workers, save_scores, progress, as_json):
    """IJB-B/C 1:1 template verification of BACKBONE with WEIGHTS: TAR at FAR 1e-6 to 1e-1.

    Each loose crop is aligned to the ArcFace 112x112 five-point template with a similarity
    transform, embedded with its mirror image (the two summed), weighed by its detector score,
    averaged per media, summed per template and L2-normalised; a template pair's score is the
    cosine of its two templates.  TAR at each FAR is read from the ROC as insightface's
    eval_ijbc.py reads it (see docs/IJB.md).  Needs OpenCV: pip install 'arcbench[ijb]'.

    \b
    Examples:
      arcbench eval-ijb --root IJB_release/IJBC --backbone iresnet50 --weights backbone.pth
      arcbench data synth --ijb -o ijb_mini && arcbench eval-ijb --root ijb_mini --weights model.pth
    """
    from .. import registry
    from ..verification.ijb.meta import read_meta
    from ..errors import ArcbenchError
    from ..verification.ijb.align import cv2_module
    from ..verification.ijb.evaluate import evaluate_ijb, printable, save_outputs

    cv2_module()  # say what to install before any work
    if not os.path.isfile(weights):
        raise ArcbenchError("weights file not found", weights)
    meta = read_meta(root)
    out_dir = out_dir or os.path.join("ijb", f"{meta.name}-{backbone}")
    dev = registry.require_device(device)
    dev.bind(0)
    say = None if as_json else (lambda m: click.echo(m, err=True))
    try:
        result = evaluate_ijb(meta, backbone, weights, dev, out_dir, batch_size=batch_size, flip=flip, amp=amp,
                              workers=workers, resume=resume, detector_score=detector_score,
                              unit_faces=unit_faces, progress=progress and not as_json, log=say)
    except KeyboardInterrupt:
        click.echo(f"arcbench: interrupted; the faces embedded so far are kept in {out_dir}: "
                   f"add --resume to go on", err=True)
        raise SystemExit(130) from None
    paths = save_outputs(result, out_dir, meta if save_scores else None)
    if as_json:
        echo_json({**printable(result), "files": paths})
        return
    r = result
    click.echo(f"{r['name']} 1:1 verification: {backbone} ({os.path.basename(weights)}) on {dev.name}, "
               f"variant {r['variant']}")
    skipped = ", ".join(f"{n} {why}" for why, n in r["faces_skipped"].items()) or "none skipped"
    click.echo(f"  {r['faces_used']} of {r['faces']} faces ({skipped}); {r['templates_used']} templates; "
               f"{r['pairs_used']} pairs ({r['genuine_pairs']} genuine, {r['impostor_pairs']} impostor"
               + (f", {r['pairs_skipped']} skipped: a template without a usable face" if r["pairs_skipped"] else "")
               + ")")
    keys = list(r["tar_at_far"])
    click.echo("  " + "FAR".ljust(8) + "".join(k.rjust(9) for k in keys))
    click.echo("  " + "TAR".ljust(8) + "".join(f"{100 * r['tar_at_far'][k]:8.2f}%" for k in keys))
    coarse = [k for k in keys if r["impostor_pairs"] * float(k) < 1]
    if coarse:
        click.echo(f"  ({r['impostor_pairs']} impostor pairs cannot resolve FAR {', '.join(coarse)}: "
                   f"the nearest ROC point is read there)")
    click.echo(f"  AUC {r['auc']:.4f}   embedding {r['embed_seconds']:.1f} s" if r["auc"] is not None
               else f"  embedding {r['embed_seconds']:.1f} s")
    for what, path in paths.items():
        click.echo(f"  {what}: {path}")
