"""The training data layer: data sets on disk and the per-rank loader.

``open_train_set`` accepts what users have: a folder of identity folders, a
``cls_train.txt`` (seed format), an insightface RecordIO folder, or a folder
plus an annotation file (the seed's ``--train_data_path`` /
``--train_annotation_path``).  Preprocessing is the reference's (see
:mod:`arcbench.data.preprocess`); augmentation is its random horizontal flip.

Bad images (missing, truncated, not an image) never crash a worker: the
sample comes back as a zero image with label -1 and a reason, the collate
step drops it, and :class:`TrainLoader` either counts it (``skip``) or raises
a one-line :class:`ArcbenchError` naming the file (``fail``).
"""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data.distributed import DistributedSampler

from ..errors import ArcbenchError
from .preprocess import load_uint8
from .device_decode import Encoded, EncodedBatch, read_sample
from . import index as _index
from .recordio import RecordReader, is_recordio_folder
from .synthetic_batches import SyntheticBatches, is_synthetic

BAD_IMAGE_MODES = ("skip", "fail")


class TrainSet(Dataset):
    """Images and integer labels; ``__getitem__`` -> ``(HWC uint8, label, bad)``.

    uint8 is a quarter of float32's bytes through the workers' shared memory, pinning and
    the copy; the device scales it (:func:`arcbench.data.preprocess.normalise`, bit-identical
    to the reference's float arithmetic).

    ``bad`` is ``""`` for a good sample, else ``"<path>: <reason>"`` (then the
    image is zeros and the label -1).
    """

    synthetic = False

    def __init__(self, name: str, num_classes: int, *, paths: Optional[Sequence[str]] = None,
                 labels: Optional[Sequence[int]] = None, reader: Optional[RecordReader] = None,
                 input_size: int = 112, augment: bool = True, on_bad_image: str = "skip",
                 source: str = "", decode: str = "host"):
        _check_mode(on_bad_image)
        #: "device": JPEGs travel as bytes and the card decodes them (data/device_decode.py)
        self.decode = decode
        self.name = name
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.augment = bool(augment)
        self.on_bad_image = on_bad_image
        self.source = source or name
        self.reader = reader
        if reader is not None:
            self.paths, self.labels = None, None
        else:
            if paths is None or labels is None or len(paths) != len(labels):
                raise ValueError("TrainSet needs parallel paths and labels, or a RecordReader")
            self.paths = list(paths)
            # one compact tensor instead of ~500k Python ints copied into each worker
            self.labels = torch.as_tensor(list(labels), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.reader) if self.reader is not None else len(self.paths)

    #: seeds the augmentation; :class:`TrainLoader` sets it to the run's seed
    flip_seed = 0

    def _flip(self, epoch: int, i: int) -> bool:
        # a function of (seed, epoch, sample), not of any process's RNG state: the same sample
        # flips the same way with or without loader workers, and after a resume
        return self.augment and augment_bit(self.flip_seed, epoch, i)

    def __getitem__(self, key):
        """``key``: a sample index, or ``(epoch, index)`` as :class:`TrainLoader`'s sampler yields."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        flip = self._flip(epoch, i)
        if self.reader is not None:
            key = self.reader.keys[i]
            where = f"{self.reader.rec_path}#{key}"
            try:
                label, data = self.reader.read(key)
                img = self._sample(data, flip, where)
            except ArcbenchError as exc:
                return self._bad(f"{where}: {exc.message}")
            except Exception as exc:  # decoder errors we did not anticipate: still one sample
                return self._bad(f"{where}: {type(exc).__name__}: {exc}")
            return img, label, ""
        path = self.paths[i]
        try:
            img = self._sample(path, flip, path)
        except ArcbenchError as exc:
            return self._bad(f"{path}: {exc.message}")
        except Exception as exc:
            return self._bad(f"{path}: {type(exc).__name__}: {exc}")
        return img, int(self.labels[i]), ""

    def _sample(self, src, flip: bool, what: str):
        if self.decode != "device":
            return load_uint8(src, self.input_size, flip=flip, what=what)
        if not isinstance(src, bytes):
            try:
                with open(src, "rb") as fh:
                    src = fh.read()
            except FileNotFoundError:
                raise ArcbenchError("image not found", what) from None
            except OSError as exc:
                raise ArcbenchError(f"cannot read image: {exc.strerror or exc}", what) from None
        raw = src
        return read_sample(raw, self.input_size, flip, what,
                           lambda: load_uint8(raw, self.input_size, flip=flip, what=what))

    def _bad(self, why: str):
        return torch.zeros(self.input_size, self.input_size, 3, dtype=torch.uint8), -1, why.replace("\n", " ")

    def __repr__(self) -> str:
        return f"TrainSet(name={self.name!r}, images={len(self)}, num_classes={self.num_classes})"


def augment_bit(seed: int, epoch: int, index: int) -> bool:
    """One pseudo-random bit from ``(seed, epoch, index)`` (splitmix64 finaliser): cheap,
    stateless, and identical in every process."""
    mask = (1 << 64) - 1
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index) * 0x94D049BB133111EB) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return bool((z ^ (z >> 31)) & 1)


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` so each sample's augmentation depends on the epoch too,
    decided in the main process (persistent workers never see ``set_epoch``)."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in self.sampler)


def _check_mode(mode: str) -> None:
    if mode not in BAD_IMAGE_MODES:
        raise ArcbenchError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_MODES)}, got {mode!r}")


def _name_for(folder: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(folder))) or folder


def open_train_set(spec: str, *, annotation: Optional[str] = None, input_size: int = 112,
                   augment: bool = True, on_bad_image: str = "skip", decode: str = "host") -> TrainSet:
    """Open a training set from a folder, an annotation file or a RecordIO folder.

    Resolution: RecordIO folder (``train.rec`` + ``train.idx``) > ``annotation``
    given (relative image paths resolve against ``spec``) > a folder holding
    ``cls_train.txt`` > a folder of identity folders > a file taken as an
    annotation.  ``"synthetic"`` is not on disk: use :class:`SyntheticBatches`.
    """
    _check_mode(on_bad_image)
    if is_synthetic(spec):
        raise ArcbenchError("'synthetic' is not a data set on disk; use SyntheticBatches for it")
    spec = os.fspath(spec)
    kw = dict(input_size=input_size, augment=augment, on_bad_image=on_bad_image, decode=decode)
    # fail mode: a listed image that does not exist is an error naming the annotation line, up front
    strict = on_bad_image == "fail"
    if os.path.isdir(spec) and is_recordio_folder(spec):
        if annotation:
            raise ArcbenchError("an annotation file cannot be combined with a RecordIO folder", annotation)
        reader = RecordReader(spec)
        if len(reader) == 0:
            raise ArcbenchError("RecordIO folder has no image records", spec)
        return TrainSet(_name_for(spec), reader.num_classes, reader=reader, source=spec, **kw)
    if annotation:
        ann = os.fspath(annotation)
        if not os.path.isdir(spec):
            raise ArcbenchError("training data folder not found (it is the root for the annotation's "
                                "relative image paths)", spec)
        if not os.path.exists(ann) and os.path.exists(os.path.join(spec, ann)):
            ann = os.path.join(spec, ann)
        root = _index.pick_root(ann, [spec, os.path.dirname(os.path.abspath(ann))]) or spec
        paths, labels = _index.read_annotation(ann, root=root, check_exists=strict)
        return TrainSet(_name_for(spec), max(labels) + 1, paths=paths, labels=labels, source=ann, **kw)
    if os.path.isdir(spec):
        ann = os.path.join(spec, "cls_train.txt")
        if os.path.isfile(ann):
            paths, labels = _index.read_annotation(ann, check_exists=strict)
            return TrainSet(_name_for(spec), max(labels) + 1, paths=paths, labels=labels, source=ann, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = _index.scan_folder(spec)
        for w in caught:
            warnings.warn(w.message, stacklevel=2)
        return TrainSet(_name_for(spec), scan.num_classes, paths=scan.paths, labels=scan.labels,
                        source=spec, **kw)
    if os.path.isfile(spec):
        paths, labels = _index.read_annotation(spec, check_exists=strict)
        return TrainSet(_name_for(os.path.dirname(os.path.abspath(spec))), max(labels) + 1,
                        paths=paths, labels=labels, source=spec, **kw)
    raise ArcbenchError("training data not found (expected a folder of identity folders, a cls_train.txt, "
                        "a RecordIO folder with train.rec/train.idx, or 'synthetic')", spec)


# --------------------------------------------------------------------- loader
def collate_drop_bad(batch):
    """Stack the good samples; return ``(images [N, H, W, 3] uint8, labels, [bad reasons])``.

    Runs in the worker, so a bad sample costs the main process nothing; torch's
    ``default_collate`` stacks straight into shared memory there (no second copy to
    send the batch to the main process).
    """
    good = [(img, lab) for img, lab, bad in batch if not bad]
    bad = [b for _, _, b in batch if b]
    if good and isinstance(good[0][0], Encoded):  # --decode device: bytes for the card
        images = EncodedBatch([g[0] for g in good])
        labels = torch.tensor([g[1] for g in good], dtype=torch.int64)
    elif good:
        images = default_collate([g[0] for g in good])
        labels = torch.tensor([g[1] for g in good], dtype=torch.int64)
    else:
        images = torch.empty(0, *batch[0][0].shape, dtype=batch[0][0].dtype)
        labels = torch.empty(0, dtype=torch.int64)
    return images, labels, bad


def refill(images: torch.Tensor, labels: torch.Tensor, size: int):
    """The batch's good samples, repeated in order until it holds ``size`` again (its shape is then
    the same every step: no recompile for ``--compile``, no new CUDA graph)."""
    n = len(labels)
    if n == 0 or n >= size:
        return images, labels
    index = torch.arange(size - n) % n
    if isinstance(images, EncodedBatch):  # --decode device: the samples' bytes, repeated the same way
        images = EncodedBatch(images.samples + [images.samples[i] for i in index.tolist()])
    else:
        images = torch.cat([images, images[index]])
    return images, torch.cat([labels, labels[index]])


def default_workers(world_size: int = 1) -> int:
    """Decode workers per rank: this process's usable cores shared among the node's ranks, less
    one for the training process and one for pinning/unpickling, at least 1.

    Not capped: one worker decodes ~2,500 img/s, so a card that trains at 20,000 img/s
    needs 8 or more (``--workers`` overrides)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or 1)
    return max(1, cpus // max(1, local) - 2)


#: batches each worker builds ahead; with persistent workers the next epoch starts on them
PREFETCH_FACTOR = 4


class TrainLoader:
    """Per-rank batches ``(images, labels)`` of a :class:`TrainSet`, bad samples dropped.

    The shard is :class:`DistributedSampler` with ``num_replicas``/``rank``
    given explicitly, so one process needs no process group.  Ranks must
    take the same number of steps (or DDP hangs), so a batch that bad images
    left with fewer than two samples (BatchNorm needs two) is replaced by the
    previous good batch (by the next one, before the epoch's first good batch)
    when ``world_size > 1``, and skipped otherwise.  A batch that bad images only
    thinned is refilled to full size with its own good samples (:func:`refill`),
    so the batch shape never changes and a compiled model never recompiles.
    """

    def __init__(self, dataset: TrainSet, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 workers: Optional[int] = None, pin_memory: Optional[bool] = None, drop_last: bool = True,
                 on_bad_image: Optional[str] = None, device=None):
        if batch_size < 1:
            raise ArcbenchError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ArcbenchError(f"rank {rank} is outside world size {world_size}")
        mode = on_bad_image or getattr(dataset, "on_bad_image", "skip")
        _check_mode(mode)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.on_bad_image = mode
        self.synthetic = False
        self.name = getattr(dataset, "name", "")
        self.num_classes = getattr(dataset, "num_classes", None)
        self.bad_images = 0
        self.bad_examples: List[str] = []
        #: every distinct bad image this rank met ("path: reason"), for the run's bad_images.txt
        self.bad_seen: dict = {}
        self.skipped_batches = 0
        self.epoch = 0
        if len(dataset) < world_size:
            raise ArcbenchError(f"{len(dataset)} training images cannot be split over {world_size} ranks")
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=False)
        if isinstance(dataset, TrainSet):  # its augmentation takes (epoch, index) keys
            self.sampler = _EpochSampler(self.sampler)
            dataset.flip_seed = int(seed)
        if drop_last and len(self.sampler) < self.batch_size:
            raise ArcbenchError(f"batch size {batch_size} is larger than this rank's {len(self.sampler)} "
                                f"training images; lower the batch size")
        self.workers = default_workers(world_size) if workers is None else max(0, int(workers))
        if pin_memory is None:
            pin_memory = _pin_for(device)
        kw = {}
        if self.workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR)
        if pin_memory and device is not None and torch.device(device).type not in ("cuda", "cpu") \
                and not hasattr(torch, "accelerator"):
            # an older torch pins for CUDA unless told (e.g. sdaa); a newer one pins for the current
            # accelerator, the card bind() selected, and warns that the argument is deprecated
            kw["pin_memory_device"] = torch.device(device).type
        self.loader = DataLoader(dataset, batch_size=self.batch_size, sampler=self.sampler,
                                 num_workers=self.workers, collate_fn=collate_drop_bad,
                                 pin_memory=bool(pin_memory), drop_last=drop_last, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        last, owed = None, 0  # owed: empty batches of a multi-rank epoch before its first good one
        for images, labels, bad in self.loader:
            if bad:
                self.bad_images += len(bad)
                for why in bad:
                    if len(self.bad_seen) < 100_000:
                        self.bad_seen.setdefault(why, None)
                if len(self.bad_examples) < 10:
                    self.bad_examples.extend(bad[: 10 - len(self.bad_examples)])
                if self.on_bad_image == "fail":
                    raise ArcbenchError(f"bad training image {bad[0]} (on_bad_image=fail; "
                                        f"use skip to drop bad images)")
                if len(labels) < min(2, self.batch_size):
                    self.skipped_batches += 1
                    if self.world_size > 1:
                        if last is None:
                            owed += 1  # nothing to repeat yet: the next good batch stands in
                        else:
                            yield last
                    continue
                images, labels = refill(images, labels, self.batch_size)
            last = (images, labels)
            for _ in range(owed + 1):
                yield images, labels
            owed = 0


def _pin_for(device) -> bool:
    if device is None:
        return False
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available()
    return kind == "sdaa"


def make_loader(dataset, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                workers: Optional[int] = None, pin_memory: Optional[bool] = None, drop_last: bool = True,
                on_bad_image: Optional[str] = None, device=None):
    """A :class:`TrainLoader` for a :class:`TrainSet`; :class:`SyntheticBatches` pass through.

    ``on_bad_image`` defaults to the data set's own setting (``skip`` unless
    ``open_train_set`` was told otherwise).  ``pin_memory`` defaults to
    whether ``device`` is a CUDA/SDAA device.
    """
    if isinstance(dataset, SyntheticBatches):
        return dataset
    return TrainLoader(dataset, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed,
                       workers=workers, pin_memory=pin_memory, drop_last=drop_last,
                       on_bad_image=on_bad_image, device=device)
