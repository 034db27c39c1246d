"""`arcbench data`: index an identity folder, generate the synthetic face set."""
from __future__ import annotations

import os
import sys

import click



@click.group("data")
def data():
    """Prepare training and verification data (no download needed)."""


@data.command("index")
@click.argument("root", type=click.Path(file_okay=False, dir_okay=True))
@click.option("--out", "-o", default="cls_train.txt", show_default=True, type=click.Path(dir_okay=False),
              help="Annotation file to write: one '<label>;<absolute image path>' per line (the seed's "
                   "cls_train.txt format).")
def index_cmd(root, out):
    """Index ROOT/<identity>/<image> into a cls_train.txt.

    Labels are the sorted identity folder names numbered from 0. Images are
    .jpg/.jpeg/.png/.bmp/.webp in any case. Empty identity folders write no
    lines but keep their label, as the reference's txt_annotation.py does.
    """
    import warnings

    from ..data.index import index_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = index_folder(root, out, warn=False)
    click.echo(f"wrote {out}: {len(scan.paths)} images, {scan.num_classes - scan.empty_count} identities "
               f"(num_classes {scan.num_classes})")
    if scan.empty_count:
        shown = ", ".join(scan.empty_identities[:5]) + (", ..." if scan.empty_count > 5 else "")
        click.echo(f"warning: {scan.empty_count} empty identity folder(s) skipped, labels kept: {shown}", err=True)


# Mirrors arcbench.data.synth.DEFAULTS (a test keeps them equal); literal here so that
# `arcbench --help` does not import numpy and Pillow.
SYNTH_DEFAULTS = dict(identities=200, images_per_identity=16, verify_identities=100, verify_images=6,
                      pairs=100, seed=0)


@data.command("synth")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder to write train/, cls_train.txt, verify/, pairs.txt and synth.json into.")
@click.option("--identities", default=SYNTH_DEFAULTS["identities"], show_default=True, type=click.IntRange(1),
              help="Training identities (train/<identity>/).")
@click.option("--images-per-identity", default=SYNTH_DEFAULTS["images_per_identity"], show_default=True,
              type=click.IntRange(1), help="Training images per identity.")
@click.option("--verify-identities", default=SYNTH_DEFAULTS["verify_identities"], show_default=True,
              type=click.IntRange(0),
              help="Held-out identities for verification (verify/<name>/<name>_0001.jpg, LFW layout); "
                   "never the training ones. 0 writes no verification set. At least 20 otherwise.")
@click.option("--verify-images", default=SYNTH_DEFAULTS["verify_images"], show_default=True,
              type=click.IntRange(2), help="Images per verification identity.")
@click.option("--pairs", default=SYNTH_DEFAULTS["pairs"], show_default=True, type=click.IntRange(0),
              help="Positive (and as many negative) pairs per fold in pairs.txt; 10 identity-disjoint folds.")
@click.option("--seed", default=SYNTH_DEFAULTS["seed"], show_default=True, type=click.IntRange(0),
              help="The same seed writes byte-identical files.")
@click.option("--workers", default=None, type=click.IntRange(0),
              help="Processes to render with [default: the CPUs].")
@click.option("--overwrite", is_flag=True, help="Replace an existing train/ and verify/ in --out.")
@click.option("--ijb", is_flag=True,
              help="Write a synthetic IJB-format mini set instead (meta/, loose_crop/, planted.json) for "
                   "`arcbench eval-ijb`: --identities of them (20 unless given), --ijb-media media each.")
@click.option("--ijb-media", default=4, show_default=True, type=click.IntRange(2),
              help="With --ijb: media per identity (1-3 frames each), split into two templates.")
@click.pass_context
def synth_cmd(ctx, out, identities, images_per_identity, verify_identities, verify_images, pairs, seed, workers,
              overwrite, ijb, ijb_media):
    """Generate the deterministic synthetic face set (arcbench's default data, no download).

    Each identity has its own face shape, skin, eyes, brows, nose, mouth,
    hair and accessories; each image adds pose, expression, lighting, blur,
    noise and JPEG quality, so the set is learnable but not trivial.
    """
    if ijb:
        from click.core import ParameterSource

        from ..data.synth_ijb import generate_ijb

        given = ctx.get_parameter_source("identities") != ParameterSource.DEFAULT
        s = generate_ijb(out, identities=identities if given else 20, media=ijb_media, seed=seed)
        click.echo(f"wrote {s['root']}: synthetic IJB-format set, {s['identities']} identities, {s['faces']} "
                   f"loose crops in {s['media']} media, {s['templates']} templates, {s['pairs']} template pairs "
                   f"({s['genuine_pairs']} genuine)")
        click.echo(f"wrote {s['faces_file']}, {os.path.basename(s['landmarks_file'])}, "
                   f"{os.path.basename(s['pairs_file'])}; planted transforms in planted.json")
        return
    from ..data.synth import generate

    total = identities * images_per_identity + verify_identities * verify_images
    bar = None
    if sys.stdout.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="synth")
    try:
        summary = generate(out, identities=identities, images_per_identity=images_per_identity,
                           verify_identities=verify_identities, verify_images=verify_images, pairs=pairs,
                           seed=seed, workers=workers, overwrite=overwrite,
                           progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {summary['train']}: {summary['identities']} identities x {summary['images_per_identity']} "
               f"= {summary['train_images']} images")
    click.echo(f"wrote {summary['annotation']}")
    if summary["verify_identities"]:
        click.echo(f"wrote {summary['verify']}: {summary['verify_identities']} identities x "
                   f"{summary['verify_images']} = {summary['verify_total']} images")
    if summary["pairs_file"]:
        click.echo(f"wrote {summary['pairs_file']}: 10 folds x {summary['pairs_per_fold']} positive + "
                   f"{summary['pairs_per_fold']} negative pairs")
    click.echo(f"seed {summary['seed']}, generator v{summary['version']}, {summary['seconds']:.1f}s")
