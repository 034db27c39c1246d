"""Verification's images/s times the embedding, not process start-up or host copies.

The loader's workers start before the timer, the batch the loader hands over
(pinned on an accelerator) goes to the card as it is (channels_last is made on
the device), and the embeddings come to the host once per evaluation.  Before,
the workers started inside the timed loop, the host-side channels_last copy
turned a pinned batch into a pageable one, and every batch was copied back
with ``.cpu()`` (seen failing on the old code).
"""
from __future__ import annotations

import numpy as np
import torch

from arcbench.verification import evaluate as embed
from arcbench import registry
from arcbench.verification.evaluate import evaluate
from arcbench.verification.load import load_verification


def test_workers_start_before_the_timer_and_batches_reach_the_card_as_loaded(faces, monkeypatch):
    device = registry.require_device("cpu")
    events, handed = [], []
    real_iter = torch.utils.data.DataLoader.__iter__
    real_stamp = type(device).timestamp
    real_embed = embed.embed_batch

    def loader_iter(self):
        events.append("workers")
        return real_iter(self)

    def stamp(self):
        events.append("timer")
        return real_stamp(self)

    def embed_spy(model, images, *args, **kwargs):
        handed.append((images.is_contiguous(), kwargs.get("to_host", True)))
        return real_embed(model, images, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", loader_iter)
    monkeypatch.setattr(type(device), "timestamp", stamp)
    monkeypatch.setattr(embed, "embed_batch", embed_spy)
    torch.manual_seed(0)
    model = registry.create_backbone("mobilefacenet")
    vset = load_verification(val_data=str(faces / "verify"), val_pairs=str(faces / "pairs.txt"))
    result = evaluate(model, device, vset, batch_size=16, workers=1, progress=False)
    assert events[:2] == ["workers", "timer"]
    # the loader's own (NCHW, pinnable) batches, embeddings left on the card until the end
    assert handed and all(contiguous and not to_host for contiguous, to_host in handed)
    monkeypatch.undo()
    again = evaluate(model, device, vset, batch_size=16, workers=0, progress=False)
    assert np.array_equal(result["distances"], again["distances"])
