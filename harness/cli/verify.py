"""`arcbench verify A.jpg B.jpg`: are two photos the same person?"""
from __future__ import annotations

import click

from .output import echo_json
from .options import RegistryOption

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
@click.option("--flip/--no-flip", default=False, help="Add the mirrored image's embedding (test-time augmentation).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: distance, cosine, same, threshold.")
def verify_cmd(image_a, image_b, backbone, weights, threshold, device, flip, as_json):
    """Compare two face photos.

    Prints the Euclidean distance between the L2-normalised embeddings (0 = identical,
    2 = opposite), the cosine similarity (= 1 - distance^2 / 2) and the verdict.
    Photos are preprocessed like the reference: RGB, letterbox with bicubic resampling
    onto grey, scaled to [-1, 1].
    """
    import torch

    from .. import registry
    from ..checkpoint import load_backbone
    from ..embed import embed_batch
    from ..preprocess import load_tensor

    dev = registry.require_device(device)
    dev.bind(0)  # one process: the first visible card
    spec = registry.get_backbone(backbone)
    # Decode the photos first: a typo in a file name should not wait for the weights to load.
    batch = torch.stack([load_tensor(image_a, spec.input_size), load_tensor(image_b, spec.input_size)])
    model = load_backbone(backbone, weights).to(dev.torch_device()).eval()
    emb = embed_batch(model, batch, dev, flip=flip)
    cosine = float((emb[0] * emb[1]).sum())
    distance = float(torch.dist(emb[0], emb[1]))
    result = {"distance": round(distance, 6), "cosine": round(cosine, 6), "same": distance < threshold,
              "threshold": threshold}
    if as_json:
        echo_json(result)
    else:
        verdict = "same person" if result["same"] else "different people"
        click.echo(f"distance {distance:.4f}  cosine {cosine:.4f}  threshold {threshold}  ->  {verdict}")
