"""`arcbench verify A.jpg B.jpg`: are two photos the same person?"""
from __future__ import annotations

import click

from .output import echo_json
from .options import RegistryOption, engine_label, given_backbone

#: Euclidean distance between unit embeddings below which two faces are "same".
#: ArcFace-trained unit embeddings put genuine pairs around 0.6-1.1 and impostor
#: pairs around 1.3-1.5; the reference MobileFaceNet's LFW 10-fold thresholds sit near 1.2.
DEFAULT_THRESHOLD = 1.2


@click.command("verify")
@click.argument("image_a", type=click.Path(dir_okay=False))
@click.argument("image_b", type=click.Path(dir_okay=False))
@click.option("--backbone", default="mobilefacenet", show_default=True, cls=RegistryOption, names_of="backbone",
              help="Backbone plugin: {names}.")
@click.option("--weights", required=True, type=click.Path(dir_okay=False),
              help="Backbone weights: a state dict, an arcbench checkpoint or export, or the reference .pth.")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, type=float,
              help="Same person when the distance between unit embeddings is below this (range 0..2).")
@click.option("--device", default="cpu", show_default=True, cls=RegistryOption, names_of="device",
              help="Device plugin: {names}, or 'auto' (the first available of them).")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default=None,
              help="What runs the model [default: by the file: .onnx -> onnxruntime, else torch].")
@click.option("--flip/--no-flip", default=False, help="Add the mirrored image's embedding (test-time augmentation).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: distance, cosine, same, threshold, engine.")
@click.pass_context
def verify_cmd(ctx, image_a, image_b, backbone, weights, threshold, device, engine, flip, as_json):
    """Compare two face photos.

    Prints the Euclidean distance between the L2-normalised embeddings (0 = identical,
    2 = opposite), the cosine similarity (= 1 - distance^2 / 2) and the verdict.
    Photos are preprocessed like the reference: RGB, letterbox with bicubic resampling
    onto grey, scaled to [-1, 1].
    """
    import torch

    from .. import registry
    from ..verification.evaluate import embed_batch
    from ..inference.engines import embedder
    from ..data.preprocess import open_image, load_tensor

    dev = registry.require_device(device)
    dev.bind(0)  # one process: the first visible card
    named = given_backbone(ctx, backbone)
    if named:
        registry.get_backbone(named)  # an unknown name is the first thing to hear about
    # Decode the photos first: a typo in a file name should not wait for the weights to load.
    open_image(image_a), open_image(image_b)
    e = embedder(named, weights, dev, engine)
    batch = torch.stack([load_tensor(image_a, e.input_size), load_tensor(image_b, e.input_size)])
    emb = embed_batch(e.model, batch, dev, flip=flip)
    cosine = float((emb[0] * emb[1]).sum())
    distance = float(torch.dist(emb[0], emb[1]))
    result = {"distance": round(distance, 6), "cosine": round(cosine, 6), "same": distance < threshold,
              "threshold": threshold, "engine": e.engine}
    if as_json:
        echo_json(result)
    else:
        verdict = "same person" if result["same"] else "different people"
        click.echo(f"distance {distance:.4f}  cosine {cosine:.4f}  threshold {threshold}  ->  {verdict}"
                   f"  ({engine_label({'engine': e.engine, 'engine_notes': e.notes})})")
