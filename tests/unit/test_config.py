"""RunConfig's sections: each refuses its own bad values, and the flat layout (command line,
config.json) round-trips unchanged, so run directories written before the sections still resume."""
import dataclasses
import json
import shutil

import pytest

from arcbench.config import FLAT_NAMES, SECTIONS, RunConfig
from arcbench.errors import ArcbenchError
from testutil import TESTS

#: config.json as the flat RunConfig wrote it (a 2-process Partial FC run), before the sections
FLAT_V1 = TESTS / "unit" / "fixtures" / "config_flat_v1.json"

#: (section, flat settings, message): each bad value is refused by its own section, word for word
BAD = [
    ("dist", dict(nproc=0), "--nproc and --nnodes must be positive, got 0 and 1"),
    ("dist", dict(nnodes=2, node_rank=2), "--node-rank 2 is outside 0..1"),
    ("dist", dict(dist_timeout=0.0), "--collective-wait and the process-group timeout must be positive, "
                                     "got 120.0 and 0.0"),
    ("dist", dict(master_port=70000), "--master-port must be 1..65535, got 70000"),
    ("schedule", dict(batch_size=0), "--batch-size must be positive, got 0"),
    ("schedule", dict(epochs=0), "--epochs must be positive, got 0"),
    ("schedule", dict(max_steps=0), "--max-steps must be positive, got 0"),
    ("schedule", dict(warmup_steps=-1), "--warmup-steps must be 0 or more, got -1"),
    ("schedule", dict(lr_schedule="linear"), "unknown --lr-schedule 'linear'; known: reference, cosine, step"),
    ("optim", dict(lr=float("inf")), "--lr must be a positive number, got inf"),
    ("optim", dict(grad_clip=-1.0), "--grad-clip must be a positive number, got -1.0"),
    ("optim", dict(optimizer="lamb"), "unknown optimizer 'lamb'; known: sgd, adamw"),
    ("optim", dict(precision="fp16"), "unknown precision 'fp16'; known: fp32, amp"),
    ("optim", dict(amp_dtype="fp8"), "unknown --amp-dtype 'fp8'; known: bf16, fp16"),
    ("optim", dict(compile_mode="fast"), "unknown --compile-mode 'fast'; known: default, reduce-overhead, "
                                         "max-autotune, max-autotune-no-cudagraphs"),
    ("eval", dict(eval_batch_size=0), "--eval-batch-size must be positive, got 0"),
    ("eval", dict(eval_precision="fp16"), "unknown --eval-precision 'fp16'; known: fp32, amp"),
    ("recording", dict(checkpoint_steps=-1), "--checkpoint-every and --checkpoint-steps must be 0 (never) or positive"),
    ("recording", dict(log_interval=0), "--log-interval must be positive, got 0"),
    ("model", dict(margin_s=0.0), "--margin-s must be a positive number, got 0.0"),
    ("model", dict(margin_m=float("nan")), "--margin-m must be a finite number, got nan"),
    ("model", dict(sample_rate=1.5), "--sample-rate must be in (0, 1], got 1.5"),
    ("model", dict(head="partial_fc", margin="sphere"), "unknown --margin 'sphere'; known: arcface, cosface, combined"),
    ("model", dict(head="partial_fc", margin="combined", margin_m=0.3),
     "--margin-m does not apply to the combined margin"),
    ("model", dict(weights="/nonexistent/w.pth"), "--weights: path does not exist"),
    ("data", dict(workers=-1), "--workers must be 0 or more, got -1"),
    ("data", dict(decode="gpu"), "--decode must be host or device, got 'gpu'"),
    ("data", dict(train_data="synthetic", synthetic_steps=0),
     "--synthetic-classes and --synthetic-steps must be positive"),
    ("data", dict(on_bad_image="retry"), "--on-bad-image must be skip or fail"),
    ("data", dict(val_data="/tmp"), "--val-data and --val-pairs go together"),
    ("data", dict(train_data="/nonexistent/train"), "--train-data: path does not exist"),
    ("data", dict(val_bin="/nonexistent/lfw.bin"), "--val-bin: path does not exist"),
]


@pytest.mark.parametrize("section,bad,message", BAD, ids=[f"{s}-{'-'.join(b)}" for s, b, _ in BAD])
def test_each_section_refuses_its_own_bad_values(section, bad, message):
    cfg = RunConfig(**bad)
    with pytest.raises(ArcbenchError) as own:
        getattr(cfg, section).validate()
    assert message in str(own.value)
    for other in SECTIONS:  # no other section looks at the value
        if other != section:
            getattr(cfg, other).validate()
    with pytest.raises(ArcbenchError) as whole:
        cfg.validate()  # the whole config says the same
    assert str(whole.value) == str(own.value)


def test_checks_across_sections_stay_with_the_run_config():
    cfg = RunConfig(batch_size=64, nproc=3)
    for section in SECTIONS:
        getattr(cfg, section).validate()
    with pytest.raises(ArcbenchError, match="batch size 64 does not split evenly over 3 processes"):
        cfg.validate()
    with pytest.raises(ArcbenchError, match="unknown mode 'serve'"):
        RunConfig(mode="serve").validate()


def test_flat_names_build_and_change_sections():
    cfg = RunConfig(lr=0.05, nproc=2, record=False, val_bin=["a.bin"], eval_every=3)
    assert (cfg.optim.lr, cfg.dist.nproc, cfg.recording.enabled, cfg.data.val_bin, cfg.eval.eval_every) == \
        (0.05, 2, False, ["a.bin"], 3)
    assert RunConfig().optim.lr == 1e-2 and RunConfig(optimizer="adamw").optim.lr == 1e-3  # the default lr
    changed = cfg.replace(quiet=True, batch_size=32)
    assert (changed.recording.quiet, changed.schedule.batch_size, changed.recording.enabled) == (True, 32, False)
    assert (cfg.recording.quiet, cfg.schedule.batch_size) == (False, 64)  # the original is untouched
    assert changed.recording is not cfg.recording and changed.optim is not cfg.optim
    whole = cfg.replace(optim=dataclasses.replace(cfg.optim, lr=0.2), recording=cfg.recording, seed=3)
    assert (whole.optim.lr, whole.recording.enabled, whole.schedule.seed) == (0.2, False, 3)
    with pytest.raises(TypeError, match="unknown settings bogus"):
        RunConfig(bogus=1)
    with pytest.raises(TypeError, match="section, not a flag"):
        bool(cfg.recording)  # a section is no flag: `if cfg.recording` fails, it does not read True


def test_every_section_field_has_one_flat_name_in_config_json_order():
    old = json.loads(FLAT_V1.read_text())
    assert list(FLAT_NAMES) == list(old)[:len(FLAT_NAMES)]  # the old layout's settings, in its order
    assert list(RunConfig().to_dict()) == list(old)  # then the derived values, as before
    fields = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(fields) + 2 == len(FLAT_NAMES)  # + mode and device


def _non_default() -> dict:
    """A setting other than its default for every flat name."""
    flat = RunConfig().flat()
    changed = {k: (not v if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else f"x-{k}")
               for k, v in flat.items()}
    changed.update(val_bin=["a.bin", "b.bin"], margin_s=30.0, margin_m=0.3, max_steps=7, warmup_steps=2,
                   workers=3, grad_clip=5.0, run_id="r1")
    assert all(changed[k] != flat[k] for k in flat)
    return changed


def test_to_dict_from_dict_round_trip_is_the_identity():
    cfg = RunConfig(**_non_default())
    d = cfg.to_dict()
    assert RunConfig.from_dict(d) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert cfg.flat() == _non_default()  # every flat name reached its section field and back


def test_a_config_json_from_before_the_sections_loads_and_resumes_identically(tmp_path):
    from arcbench.run.runner import _reopen

    run_dir = tmp_path / "pfc2"
    run_dir.mkdir()
    shutil.copy(FLAT_V1, run_dir / "config.json")
    (run_dir / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    loaded = RunConfig.load(run_dir / "config.json")
    assert (loaded.model.head, loaded.dist.nproc, loaded.schedule.batch_size, loaded.optim.lr) == \
        ("partial_fc", 2, 128, 0.1)
    resumed, lock = _reopen(str(run_dir), {})
    lock.release()
    assert resumed == loaded
    # written again, it is the same file, byte for byte
    assert json.dumps(resumed.to_dict(), indent=2) + "\n" == FLAT_V1.read_text()
