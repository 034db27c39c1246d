"""The data one run trains and verifies on, opened from its :class:`~arcbench.config.RunConfig`.

Every training process calls these, so the choice between synthetic tensors,
a training set on disk and a verification set lives in one place, and the
registered backbone's input size reaches whatever makes the images.
"""
from __future__ import annotations

from ..config import DataConfig, RunConfig
from ..verification.load import load_verification_sets
from ..verification.sets import HELD_OUT, generated_set_name
from ..data.synthetic_batches import SyntheticBatches
from ..data.train_sets import make_loader, open_train_set


def open_train_data(cfg: RunConfig, device, rank: int, world_size: int, input_size: int = 112):
    """This rank's training batches at ``input_size``; synthetic ones are made on the process's bound card."""
    if cfg.data.train_data == "synthetic":
        return SyntheticBatches(cfg.per_process_batch, num_classes=cfg.data.synthetic_classes,
                                steps_per_epoch=cfg.data.synthetic_steps, device=device.torch_device(),
                                input_size=input_size, seed=cfg.schedule.seed + rank)
    dataset = open_train_set(cfg.data.train_data, annotation=cfg.data.annotation, input_size=input_size,
                             on_bad_image=cfg.data.on_bad_image, decode=cfg.data.decode)
    return make_loader(dataset, batch_size=cfg.per_process_batch, rank=rank, world_size=world_size,
                       seed=cfg.schedule.seed, workers=cfg.data.workers, pin_memory=device.torch_type != "cpu",
                       on_bad_image=cfg.data.on_bad_image, device=device.torch_device())  # pinned for this card


def open_verification_sets(data: DataConfig) -> list:
    """The run's verification sets, headline set first (empty without any); a generated set is named
    as such.  A seed-style ``--val_data_path lfw.bin`` (no pairs file) counts as a ``.bin``."""
    val_data, bins = data.val_data, data.val_bin_files()
    if val_data and not data.val_pairs and str(val_data).lower().endswith(".bin"):
        val_data, bins = None, [val_data] + bins
    if not (val_data or bins):
        return []
    generated = generated_set_name(val_data) if val_data else None
    name = generated + HELD_OUT if generated else None
    return load_verification_sets(val_data=val_data, val_pairs=data.val_pairs, val_bins=bins, name=name)


def open_verification(data: DataConfig):
    """The run's headline verification set, or None without one."""
    sets = open_verification_sets(data)
    return sets[0] if sets else None
