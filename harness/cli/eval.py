"""`arcbench eval`: LFW-style 10-fold verification accuracy of a backbone's weights."""
from __future__ import annotations

import click

from .output import echo_json
from .options import RegistryOption, engine_label, given_backbone

#: keys printed with --json, in this order
JSON_KEYS = ("name", "accuracy", "accuracy_std", "best_thresholds", "val", "val_std", "far", "auc", "eer",
             "pairs_used", "pairs_skipped", "num_images", "images_per_second")


#: the false accept rate VAL is read at (the published protocol)
FAR_TARGET = 1e-3


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def far_too_coarse(result: dict, target: float = FAR_TARGET) -> str:
    """Why VAL is not at FAR ``target`` on a small set: a fold with fewer than 1/target negative
    pairs cannot show a false accept rate that low (one false accept is already more); else ''."""
    import numpy as np

    issame, folds = result.get("issame"), result.get("folds")
    if issame is None or folds is None or not len(issame):
        return ""
    issame, folds = np.asarray(issame, bool), np.asarray(folds)
    negatives = min(int(np.sum(~issame & (folds == f))) for f in np.unique(folds))
    if negatives * target >= 1:
        return ""
    return (f"the set is too small for FAR {_pct(target)}: a fold has {negatives} negative pairs, so one "
            f"false accept is already {_pct(1 / max(negatives, 1))}; take VAL as indicative only")

@click.command("eval")
@click.option("--backbone", "--model_name", "backbone", default="mobilefacenet", show_default=True,
              cls=RegistryOption, names_of="backbone", help="Backbone plugin: {names}.")
@click.option("--weights", "--model_path", "weights", required=True, type=click.Path(dir_okay=False),
              help="Backbone weights: a state dict, an arcbench checkpoint or export, or the reference .pth.")
@click.option("--val-data", "--val_data_path", "val_data", type=click.Path(),
              help="LFW-layout image folder: <DIR>/<name>/<name>_0001.jpg. Needs --val-pairs. "
                   "(A .bin given here is read as --val-bin.)")
@click.option("--val-pairs", "--val_pairs_path", "val_pairs", type=click.Path(dir_okay=False),
              help="Pairs file: the reference lfw_pair.txt or the official LFW pairs.txt "
                   "(header 'folds n', then per fold n 'name i j' and n 'name1 i name2 j' lines).")
@click.option("--val-bin", "val_bin", type=click.Path(dir_okay=False),
              help="insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin). Read with an "
                   "unpickler that refuses any code; 10 contiguous folds.")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default=None,
              help="What runs the model [default: by the file: .onnx -> onnxruntime, else torch]. onnxruntime "
                   "with torch weights exports them to a temporary ONNX file first.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Add the mirrored image's embedding before normalising (test-time augmentation).")
@click.option("--eval-batch-size", "--eval_batch_size", "batch_size", default=256, show_default=True,
              type=click.IntRange(min=1), help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, cls=RegistryOption, names_of="device",
              help="Device plugin name, or 'auto' (the first available of {names}).")
@click.option("--amp/--no-amp", default=False, show_default=True,
              help="Autocast the forward pass (fp16 on accelerators, bfloat16 on CPU).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image-decoding worker processes [default: none for small sets, else up to cores-1, max 8].")
@click.option("--thresholds", type=click.Choice(["grid", "exact"]), default="grid", show_default=True,
              help="'grid': np.arange(0, 4, 0.01), the published protocol. 'exact': every midpoint between "
                   "sorted distinct training distances.")
@click.option("--strict", is_flag=True,
              help="A pair whose image is missing is an error (default: skip the pair and count it).")
@click.option("--save-scores", type=click.Path(dir_okay=False),
              help="Write one CSV row per pair: pair,fold,distance,issame.")
@click.option("--roc", "roc_png", type=click.Path(dir_okay=False), help="Write the ROC curve as a PNG.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr (only when it is a terminal).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: " + ", ".join(JSON_KEYS) + ", device, engine, thresholds, flip.")
@click.pass_context
def eval_cmd(ctx, backbone, weights, val_data, val_pairs, val_bin, engine, flip, batch_size, device, amp, workers,
             thresholds, strict, save_scores, roc_png, progress, as_json):
    """Verification accuracy of BACKBONE with WEIGHTS on LFW-style pairs.

    Protocol (the one behind published LFW numbers): every image is preprocessed like
    the reference (RGB, bicubic letterbox onto grey, [-1, 1]) and embedded once; the
    distance of a pair is the Euclidean distance between L2-normalised embeddings
    (0..2) and "same" means distance < threshold. Pairs fall into 10 contiguous folds
    (the pairs file's blocks); for each fold the threshold that is most accurate on the
    other nine is applied to it. Accuracy is the mean +- std over folds. VAL is the true
    accept rate at FAR = 0.001, with the threshold set on the training folds. AUC and
    EER come from the pooled ROC curve.

    \b
    Examples:
      arcbench eval --weights arcface_mobilefacenet.pth --val-data lfw --val-pairs lfw_pair.txt
      arcbench eval --backbone iresnet50 --weights ms1mv2.pth --val-bin lfw.bin --flip --json
    """
    from .. import registry
    from ..verification.evaluate import evaluate_weights
    from ..verification.evaluate import printable, save_scores as write_scores
    from ..verification.load import load_verification

    from ..verification.sets import eval_set_name

    vset = load_verification(val_data=val_data, val_pairs=val_pairs, val_bin=val_bin, strict=strict,
                             name=eval_set_name(val_data, val_pairs, val_bin))
    dev = registry.require_device(device)
    dev.bind(0)  # one process: the first visible card
    result = evaluate_weights(given_backbone(ctx, backbone), weights, dev, vset, engine=engine,
                              batch_size=batch_size, flip=flip, amp=amp, workers=workers,
                              progress=progress and not as_json, thresholds=thresholds)
    backbone = result["backbone"]
    if save_scores:
        write_scores(save_scores, result)
    if roc_png:
        from ..record.plots import plot_roc

        plot_roc(result["roc"]["fpr"], result["roc"]["tpr"], roc_png,
                 title=f"{result['name']} ROC: {backbone}", auc=result["auc"])
    if as_json:
        out = {k: result[k] for k in JSON_KEYS}
        out["best_thresholds"] = [round(t, 6) for t in out["best_thresholds"]]
        out.update(device=dev.name, engine=result["engine"], thresholds=thresholds, flip=flip)
        echo_json(out)
        return
    r = printable(result)
    click.echo(f"{r['name']}: accuracy {100 * r['accuracy']:.2f}% \u00b1 {100 * r['accuracy_std']:.2f}%"
               f"  ({r['n_folds']} folds, {thresholds} thresholds{', flip' if flip else ''})")
    click.echo(f"  VAL {_pct(r['val'])} \u00b1 {_pct(r['val_std'])} @ FAR {_pct(FAR_TARGET)} (measured "
               f"{_pct(r['far'])})   AUC {r['auc'] if r['auc'] is None else format(r['auc'], '.4f')}   "
               f"EER {_pct(r['eer'])}")
    small = far_too_coarse(result)
    if small:
        click.echo(f"  note: {small}")
    skipped = f"{r['pairs_skipped']} skipped: image missing" if r["pairs_skipped"] else "none skipped"
    click.echo(f"  {r['pairs_used']} pairs ({skipped}), {r['num_images']} images, "
               f"{r['images_per_second'] or 0:.1f} images/s on {dev.name} ({engine_label(result)})")
    click.echo("  best thresholds: " + " ".join(f"{t:.3f}" for t in r["best_thresholds"]))
    if save_scores:
        click.echo(f"  scores: {save_scores}")
    if roc_png:
        click.echo(f"  ROC: {roc_png}")
