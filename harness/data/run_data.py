"""The data one run trains and verifies on, opened from its :class:`~arcbench.config.RunConfig`.

Every training process calls these, so the choice between synthetic tensors,
a training set on disk and a verification set lives in one place, and the
registered backbone's input size reaches whatever makes the images.
"""
from __future__ import annotations

from ..config import RunConfig
from ..verification import load_verification
from .set_names import HELD_OUT, generated_set_name
from .synthetic_batches import SyntheticBatches
from .train_sets import make_loader, open_train_set


def open_train_data(cfg: RunConfig, device, rank: int, world_size: int, input_size: int = 112):
    """This rank's training batches at ``input_size``; synthetic ones are made on the process's bound card."""
    if cfg.train_data == "synthetic":
        return SyntheticBatches(cfg.per_process_batch, num_classes=cfg.synthetic_classes,
                                steps_per_epoch=cfg.synthetic_steps, device=device.torch_device(),
                                input_size=input_size, seed=cfg.seed + rank)
    dataset = open_train_set(cfg.train_data, annotation=cfg.annotation, input_size=input_size,
                             on_bad_image=cfg.on_bad_image)
    return make_loader(dataset, batch_size=cfg.per_process_batch, rank=rank, world_size=world_size,
                       seed=cfg.seed, workers=cfg.workers, pin_memory=device.torch_type != "cpu",
                       on_bad_image=cfg.on_bad_image)


def open_verification(cfg: RunConfig):
    """The run's verification set, or None without one; a generated set is named as such."""
    if not (cfg.val_data or cfg.val_bin):
        return None
    generated = generated_set_name(cfg.val_data)
    name = generated + HELD_OUT if generated else None
    return load_verification(val_data=cfg.val_data, val_pairs=cfg.val_pairs, val_bin=cfg.val_bin, name=name)
