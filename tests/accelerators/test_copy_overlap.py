"""The next batch's host-to-device copy overlaps this step, and the next step waits for it.

The stand-in accelerator (``tests/standins/fakecards.py``) writes down every stream call; a
torch function mode writes down each copy of a host uint8 batch and the stream it
was issued on; the optimizer and the model write down their steps.  On a device
with streams the order must be: batch N+1's copy on the side stream before step N's
optimizer step, and step N+1's forward after the compute stream waited on the
event recorded after that copy.  On the CPU (no streams) batches are placed when
taken, as before.
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from arcbench import plugin_manager, registry
from arcbench.config import RunConfig
from arcbench.data import synth
from arcbench.data.train_sets import make_loader, open_train_set
from arcbench.train.trainer import Trainer


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    out = tmp_path_factory.mktemp("overlap") / "faces"
    synth.generate(out, identities=3, images_per_identity=4, verify_identities=0, pairs=0, workers=0)
    return out / "train"


class _Copies(TorchFunctionMode):
    """Notes each ``Tensor.to`` of a uint8 host batch, with the fake card's current stream."""

    def __init__(self, log, runtime):
        super().__init__()
        self.log, self.runtime = log, runtime

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor) \
                and args[0].dtype == torch.uint8 and args[0].dim() == 4:
            self.log.append(("copy", {"stream": self.runtime.current_stream().name}))
        return func(*args, **kwargs)


def _train(device_name, faces, steps=4):
    """Train ``steps`` steps of the tiny backbone; return the ordered log of copies, stream calls,
    forwards and optimizer steps."""
    plugin_manager.load_plugin_module("fakecards")
    plugin_manager.load_plugin_module("tinyplugin")
    try:
        import fakecards

        runtime = fakecards.RUNTIME
        dev = registry.require_device(device_name)
        dev.bind(0)
        cfg = RunConfig(device=device_name, backbone="tiny", batch_size=2, train_data=str(faces), epochs=1,
                        max_steps=steps, quiet=True, record=False, workers=0, log_interval=100)
        data = make_loader(open_train_set(str(faces)), batch_size=2, workers=0, seed=0)
        tr = Trainer(cfg, dev, data, recorder=None, log=lambda *a: None)
        log = []
        runtime.reset_streams()
        runtime.streams_log = log  # one list: the stand-in's stream calls and ours, in order
        tr.optimizer.register_step_pre_hook(lambda *_: log.append(("optimizer_step", {})))
        tr.face.backbone.register_forward_pre_hook(lambda *_: log.append(("forward", {})))
        with _Copies(log, runtime):
            tr.train_epoch()
        assert tr.progress.global_step == steps
        return log
    finally:
        plugin_manager.unregister_plugin("tinyplugin")
        plugin_manager.unregister_plugin("fakecards")


def _positions(log, name):
    return [i for i, (event, _) in enumerate(log) if event == name]


def test_next_batch_is_copied_on_a_side_stream_while_this_step_runs(faces):
    log = _train("fakecard", faces, steps=4)
    copies, steps, forwards = _positions(log, "copy"), _positions(log, "optimizer_step"), _positions(log, "forward")
    assert len(steps) == len(forwards) == 4 and len(copies) >= 5
    side = {info["stream"] for event, info in log if event == "stream_new"}
    assert len(side) == 1, "one side stream for the epoch's copies"
    assert all(log[i][1]["stream"] in side for i in copies), "every copy is issued on the side stream"
    for n in range(3):
        assert copies[n + 1] < steps[n], f"batch {n + 2}'s copy is issued before step {n + 1}'s optimizer step"
    # the event recorded on the side stream after copy N is what step N's compute waits on
    for n in range(4):
        recorded = next(log[i][1] for i in range(copies[n], len(log)) if log[i][0] == "event_record")
        assert recorded["stream"] in side
        waits = [i for i, (e, info) in enumerate(log) if e == "wait_event" and info["number"] == recorded["number"]]
        assert len(waits) == 1 and log[waits[0]][1]["stream"] == "default"
        assert copies[n] < waits[0] < forwards[n], f"step {n + 1}'s forward waits on its copy's event"
        if n:
            assert waits[0] > steps[n - 1]


def test_without_streams_each_batch_is_placed_when_it_is_taken(faces):
    log = _train("cpu", faces, steps=3)
    copies, steps, forwards = _positions(log, "copy"), _positions(log, "optimizer_step"), _positions(log, "forward")
    assert len(copies) == len(steps) == len(forwards) == 3
    assert all(log[i][1]["stream"] == "default" for i in copies)
    assert not _positions(log, "event_record") and not _positions(log, "wait_event")
    for n in range(3):  # no lookahead on the host: copy, step, copy, step
        assert copies[n] < forwards[n] < steps[n] and (n == 2 or steps[n] < copies[n + 1])
