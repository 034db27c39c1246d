"""`arcbench run`: train, verify and record one run (the main job).

The SDAA model zoo's flags (``--model_name --batch_size --use_amp
--train_data_path ...``) work as given in its README, with ``True``/``False``
values, alongside arcbench's own dashed flags.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys

import click

from ..config import AMP_DTYPES, COMPILE_MODES, EvalConfig, RunConfig, ScheduleConfig
from ..record.recorder import BAD_IMAGES_FILE, read_bad_images
from .options import RegistryOption

SEED_MODEL_NAMES = ("arcface",)


RUN_HELP = """Train ArcFace, verify it on face pairs, and record everything in a run directory.

With no arguments it trains MobileFaceNet on an embedded set of synthetic face
identities (generated once into ~/.cache/arcbench, no download) on the best
available device (sdaa, then cuda, then cpu), verifies once, at the end, on
held-out synthetic identities with the LFW 10-fold protocol, and writes
runs/<run_id>/.  With your own --train-data it verifies after every epoch
(--eval-every N changes both).

\b
Batch size: --batch-size is PER PROCESS (the global batch is it times the
number of processes); the seed's --batch_size is GLOBAL, as in the model zoo
(--nproc_per_node 3 --batch_size 96 means 32 per process).

\b
Examples:
  arcbench run
  arcbench run --device cuda --backbone iresnet50 --train-data faces_webface_112x112 \\
      --val-bin faces_webface_112x112/lfw.bin --epochs 20 --batch-size 128 --amp
  arcbench run --model_name arcface --nproc_per_node 3 --batch_size 96 --lr 1e-2 --device sdaa \\
      --epoch 50 --distributed True --use_amp True --train_data_path datasets \\
      --train_annotation_path cls_train.txt --val_data_path lfw --val_pairs_path model_data/lfw_pair.txt
  arcbench run --eval_batch_size 256 --device sdaa --model_path model_data/arcface_mobilefacenet.pth \\
      --do_eval=True --val_data_path lfw --val_pairs_path model_data/lfw_pair.txt
"""


@click.command("run", help=RUN_HELP, context_settings={"max_content_width": 110})
# -- what to train
@click.option("--device", default="auto", show_default=True, cls=RegistryOption, names_of="device",
      help="Device plugin: auto (the first available of {names}) or one of them.")
@click.option("--backbone", default=None, cls=RegistryOption, names_of="backbone",
      help="Backbone plugin (default mobilefacenet): {names}. See `arcbench backbones`.")
@click.option("--model_name", "--model-name", "model_name", default=None,
      help="Seed spelling: 'arcface' (the default model) or a backbone name.")
@click.option("--head", default="arcface", show_default=True, cls=RegistryOption, names_of="head",
      help="Margin head: {names} (see `arcbench heads`; partial_fc shards the class centres over the "
           "processes, sampled softmax: for 100k+ identities; see README).")
@click.option("--margin-s", type=float, default=None, help="Head scale s (default: 32 for mobilefacenet, 64 otherwise).")
@click.option("--margin-m", type=float, default=None,
      help="Head margin m: ArcFace's angular margin (default 0.5) or CosFace's cosine margin (default 0.35). "
           "Refused for the combined head.")
@click.option("--margin", type=click.Choice(["arcface", "cosface", "combined"]), default=None,
      help="--head partial_fc: its margin (default arcface).")
@click.option("--sample-rate", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True,
      help="--head partial_fc: fraction r of each process's class centres used per step (every centre "
           "labelled in the global batch, plus random others); insightface uses 0.1-0.3 for large sets.")
# -- data
@click.option("--train-data", "--train_data_path", "--train-data-path", "train_data", default=None,
      help="Image folder (root/<identity>/<img>), a cls_train.txt, a RecordIO folder (train.rec/.idx), "
           "or 'synthetic' (random tensors on the device: pure compute). Default: embedded synthetic faces.")
@click.option("--annotation", "--train_annotation_path", "--train-annotation-path", "annotation", default=None,
      help="cls_train.txt index ('<label>;<path>' lines) for an image folder.")
@click.option("--val-data", "--val_data_path", "--val-data-path", "val_data", default=None,
      help="LFW-layout folder (<name>/<name>_0001.jpg); needs --val-pairs.")
@click.option("--val-pairs", "--val_pairs_path", "--val-pairs-path", "val_pairs", default=None,
      help="Pairs file: lfw_pair.txt or the official LFW pairs.txt.")
@click.option("--val-bin", multiple=True,
      help="insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin), or a folder of them. Repeat it "
           "for several sets; they add to a --val-data/--val-pairs set, and each is verified at every point.")
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
      help="Corrupt training images: skip and count them, or stop the run.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes per rank (default: from the CPU count).")
@click.option("--decode", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="Where training JPEGs are decoded: host (the reference's libjpeg-turbo pixels) or device "
                   "(torchvision's nvJPEG on a CUDA card, for hosts short of cores; not bit-identical).")
# -- length and optimisation
@click.option("--epochs", "--epoch", "--total_epochs", "epochs", type=int, default=None,
      help="Epochs (default 50, the reference recipe; 3 for the embedded synthetic set).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps in total.")
@click.option("--batch-size", "batch_size", type=int, default=None, help="Batch size PER PROCESS (default 64).")
@click.option("--batch_size", "seed_batch_size", type=int, default=None, help="Seed spelling: GLOBAL batch size.")
@click.option("--lr", type=float, default=None,
      help="Learning rate for a batch of 64; scaled linearly with the global batch and clamped "
           "(SGD 5e-4..0.1, AdamW 3e-4..1e-3), as in the reference. Default 1e-2 (SGD), 1e-3 (AdamW); "
           "0.1 (SGD) for the embedded synthetic set.")
@click.option("--no-lr-scaling", is_flag=True, help="Use --lr as given.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
      help="SGD: momentum 0.9, nesterov, weight decay 5e-4. AdamW: weight decay 5e-4. Both fused where the "
           "device has fused kernels (no GradScaler sync), else foreach.")
@click.option("--lr-schedule", "--schedule", "lr_schedule", type=click.Choice(["reference", "cosine", "step"]),
      default=ScheduleConfig.lr_schedule, show_default=True,
      help="reference: the reference's per-epoch schedule (quadratic warm-up, cosine, flat min-lr tail); "
           "step: its per-epoch x(min_lr/lr)^(1/9) every epochs/10; cosine: per-iteration linear warm-up "
           "then cosine to 1% (insightface style).")
@click.option("--warmup-steps", type=int, default=None,
      help="--lr-schedule cosine: linear warm-up steps (default 5% of the run, at most an epoch).")
@click.option("--grad-clip", type=float, default=None, help="Clip the gradient norm to this value.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (data order, init, augmentation).")
# -- precision and speed
@click.option("--amp/--no-amp", default=None, help="Mixed precision via the device plugin (cuda/sdaa fp16 + GradScaler, cpu bf16).")
@click.option("--precision", type=click.Choice(["fp32", "amp"]), default=None, help="Same as --amp/--no-amp.")
@click.option("--use_amp", "--use-amp", "use_amp", type=click.BOOL, default=None, help="Seed spelling: True/False.")
@click.option("--eval-precision", type=click.Choice(["fp32", "amp"]), default=EvalConfig.eval_precision,
      show_default=True,
      help="Verification during training: fp32 as in the reference, whatever --precision is; amp is faster "
           "(labelled in the summary).")
@click.option("--compile", is_flag=True, help="torch.compile the model and its loss (slow first steps, faster after).")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
      help="torch.compile mode (implies --compile): reduce-overhead and max-autotune use CUDA graphs. "
           "Each device plugin says which modes it supports.")
@click.option("--amp-dtype", type=click.Choice(list(AMP_DTYPES)), default=None,
      help="AMP dtype: bf16 needs no GradScaler. Default: bf16 on CUDA compute capability 8.0+ and the CPU, "
           "fp16 + GradScaler on older GPUs and SDAA (as the model zoo).")
@click.option("--deterministic", is_flag=True,
      help="Deterministic algorithms, and no cuDNN autotuning (cudnn.benchmark, on by default on CUDA).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="channels_last memory format.")
# -- processes
@click.option("--nproc", "--nproc_per_node", "--nproc-per-node", "nproc", type=int, default=1, show_default=True,
      help="Processes on this node, launched with torch's elastic launcher (torchrun's engine). With "
           "--resume: continue at this many (the global batch is kept; a partial_fc head is re-sharded).")
@click.option("--distributed", type=click.BOOL, default=None, help="Seed spelling: False forces one process.")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Number of nodes.")
@click.option("--node-rank", "--node_rank", "node_rank", type=int, default=0, show_default=True, help="This node's rank.")
@click.option("--master-addr", "--master_addr", "master_addr", default="127.0.0.1", show_default=True,
      help="Address of node 0.")
@click.option("--master-port", "--master_port", "master_port", type=int, default=29505, show_default=True,
      help="Port on node 0.")
@click.option("--submit", type=click.Choice(["slurm", "local"]), default=None,
      help="Submit this run as a batch job with submitit (pip install 'arcbench[slurm]'): one task per "
           "card, the job is one run; prints the job id and the run directory. local: run the job here.")
@click.option("--partition", default=None, help="--submit slurm: the Slurm partition.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="--submit: nodes.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=1, show_default=True,
      help="--submit: cards (and tasks) per node.")
@click.option("--time-limit", type=click.IntRange(min=1), default=1440, show_default=True, metavar="MINUTES",
      help="--submit: the job's time limit.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
      help="Restart the workers up to N times when one fails; they resume from the last checkpoint "
           "(--checkpoint-steps bounds what is repeated). Under torchrun, its own --max-restarts applies.")
# -- evaluation
@click.option("--eval-batch-size", "--eval_batch_size", "eval_batch_size", type=int, default=256, show_default=True,
      help="Batch size for embedding verification images.")
@click.option("--eval-every", type=int, default=None,
      help="Verify every N epochs; 0 verifies once at the end (default: 1; the embedded set: 0).")
@click.option("--flip", is_flag=True, help="Verification adds the mirrored image's embedding.")
@click.option("--do_eval", "--do-eval", "do_eval", type=click.BOOL, default=False,
      help="Seed spelling: True evaluates --model_path on the verification set instead of training.")
@click.option("--model_path", "--model-path", "--weights", "weights", default=None,
      help="Backbone weights for --do_eval (or to start training from).")
# -- recording
@click.option("--out", default="runs", show_default=True, help="Runs root; each run writes OUT/<run_id>/.")
@click.option("--run-id", default=None, help="Name of the run directory (sanitised). Default: time-mode-backbone-device-xxxx.")
@click.option("--resume", metavar="RUN_DIR", default=None,
      help="Continue the run in this run directory from its last checkpoint.")
@click.option("--checkpoint-every", type=int, default=1, show_default=True, help="Checkpoint every N epochs (0: never).")
@click.option("--checkpoint-steps", type=int, default=0, show_default=True, help="Also checkpoint every N steps (0: never).")
@click.option("--log-interval", type=int, default=20, show_default=True,
      help="Steps between loss reads (the only host sync for the loss) and log lines.")
@click.option("--quiet", is_flag=True, help="No progress bar or log lines; only the final summary.")
@click.option("--collective-wait", type=click.FloatRange(min=0.1), default=120.0, show_default=True, metavar="SECONDS",
      help="Multi-process: how long a rank waits at a harness collective (verification gather, final "
           "figures) for the others; a rank that does not arrive is named in the error.")
@click.option("--synthetic-classes", type=int, default=1000, show_default=True, help="Classes for --train-data synthetic.")
@click.option("--synthetic-steps", type=int, default=100, show_default=True, help="Steps per epoch for --train-data synthetic.")
def run_cmd(**o):
    from ..run.cluster import detect
    from ..run.runner import RunFailed, execute

    ctx = click.get_current_context()

    def given(name):
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    outer = detect()  # torchrun, srun or a scheduler's environment: this process is one rank of the run
    if outer is not None:
        from ..run.group_run import launch_flags

        o = launch_flags(o, outer, given)
    cfg = build_config(o)
    if o.get("submit"):
        return _submit(o, cfg)
    overrides = None
    if o["resume"] or outer is not None:
        # the run's own settings, continued with what was given beside --resume (or an elastic restart)
        overrides = dict(epochs=o["epochs"], max_steps=o["max_steps"], quiet=o["quiet"],
                         nproc=cfg.dist.nproc if given("nproc") or outer is not None else None,
                         nnodes=cfg.dist.nnodes if outer is not None else None)
    if outer is not None:
        from ..run.group_run import execute as group_execute

        def execute(cfg, resume, overrides, log):  # noqa: F811  (one rank of the launcher's group)
            return group_execute(cfg, outer, resume=resume, overrides=overrides, log=log)
    try:
        with no_ctrl_c_echo():
            run_dir, summary = execute(cfg, resume=o["resume"], overrides=overrides,
                                       log=lambda m: click.echo(m, err=False))
    except RunFailed as exc:
        if str(exc).startswith("run interrupted"):
            click.echo(interrupted_message(getattr(exc, "run_dir", None), _tty()), err=True)
            sys.exit(130)
        click.echo(f"arcbench: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        if outer is not None and _restarting(outer, exc):
            sys.exit(130)
        click.echo(interrupted_message(getattr(exc, "run_dir", None), _tty()), err=True)
        sys.exit(130)
    except Exception as exc:
        if outer is not None and _restarting(outer, exc):
            sys.exit(1)
        raise
    if outer is None or run_dir:  # in a launcher's group, the rank that records prints
        print_summary(run_dir, summary, cfg.recording.out, warmup=_saved_warmup(run_dir, cfg.recording))


def _submit(o: dict, cfg) -> None:
    """``--submit``: the same command line as a batch job; prints the job id and the run directory."""
    from ..errors import ArcbenchError
    from ..run.rundir import new_run_id, sanitize_run_id
    from ..run.submit import strip_submit_flags, submit

    if o["resume"] or o["do_eval"]:
        raise ArcbenchError("--submit starts a new training run (not --resume or --do_eval)")
    if o["submit"] == "slurm" and not o["partition"]:
        raise ArcbenchError("--submit slurm needs --partition")
    cfg.validate()
    run_id = (sanitize_run_id(cfg.recording.run_id) if cfg.recording.run_id
              else new_run_id(cfg.model.backbone, cfg.device, cfg.mode))
    job, run_dir = submit(strip_submit_flags(sys.argv[1:]), cluster=o["submit"], out=cfg.recording.out, run_id=run_id,
                          partition=o["partition"], nodes=o["nodes"], gpus_per_node=o["gpus_per_node"],
                          time_limit=o["time_limit"])
    click.echo(f"arcbench: submitted job {job.job_id} ({o['submit']}, {o['nodes']} node(s) x {o['gpus_per_node']})")
    click.echo(f"run directory: {run_dir}")
    click.echo(f"job output:    {os.path.dirname(str(job.paths.stdout))}")


def _restarting(outer, exc: BaseException) -> bool:
    """This attempt ended and the launcher's agent will start the workers again: say so in one line."""
    from ..run.restarts import plain_message, will_restart

    if not will_restart(exc):
        return False
    first = (plain_message(str(exc)).splitlines() or [type(exc).__name__])[0][:200]
    what = "stopped" if isinstance(exc, KeyboardInterrupt) else f"failed ({first})"
    click.echo(f"arcbench: rank {outer.rank} {what}; {outer.launcher} restarts the workers from the last "
               "checkpoint", err=True)
    return True


def _saved_warmup(run_dir: str, record) -> int:
    """The run's own timing warm-up (a resumed run keeps the one it was started with)."""
    try:
        return int(RunConfig.load(os.path.join(run_dir, "config.json")).recording.timing_warmup)
    except Exception:  # noqa: BLE001  (the summary's wording only)
        return int(record.timing_warmup)


def echoctl_off(fd: int, foreground_only: bool = True):
    """Clear the terminal's ECHOCTL flag on ``fd``; returns the attributes to restore, or None (nothing done).

    Only for this terminal's foreground process (a background job changing it would be stopped by SIGTTOU).
    """
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        return None
    try:
        if not os.isatty(fd) or not hasattr(termios, "ECHOCTL"):
            return None
        if foreground_only and os.tcgetpgrp(fd) != os.getpgrp():
            return None
        old = termios.tcgetattr(fd)
        new = list(old)
        new[3] &= ~termios.ECHOCTL
        termios.tcsetattr(fd, termios.TCSANOW, new)
        return old
    except (OSError, ValueError, termios.error):
        return None


@contextlib.contextmanager
def no_ctrl_c_echo():
    """While a run draws its progress bar, Ctrl-C is not echoed as ``^C``: the echo lands after a
    full-width bar, wraps, and leaves a stray ``^`` on the bar's line.  Restored afterwards."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        fd = None
    old = echoctl_off(fd) if fd is not None else None
    try:
        yield
    finally:
        if old is not None:
            import termios

            try:
                termios.tcsetattr(fd, termios.TCSANOW, old)
            except (OSError, termios.error):
                pass


def _tty() -> bool:
    try:
        sys.stdout.flush()
        return sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def interrupted_message(run_dir, tty: bool) -> str:
    """After Ctrl-C: the exact command that continues the run.

    On a terminal the line is wiped first ("\\r" + erase line): the terminal echoes
    ``^C`` after the progress bar, and the bar's own clean-up leaves part of it.
    """
    import shlex

    clear = "\r\x1b[K" if tty else ""
    if not run_dir:
        return f"{clear}arcbench: interrupted"
    return (f"{clear}arcbench: interrupted. Continue the run with:\n"
            f"  arcbench run --resume {shlex.quote(run_dir)}")


def build_config(o: dict):
    """Map arcbench's and the seed's flags onto one RunConfig."""
    from ..config import DEFAULT_EPOCHS, EMBEDDED_EPOCHS, EMBEDDED_LR
    from ..errors import ArcbenchError

    backbone = o["backbone"]
    if o["model_name"] and o["model_name"] not in SEED_MODEL_NAMES:
        backbone = backbone or o["model_name"]
    backbone = backbone or "mobilefacenet"
    precision = o["precision"]
    if o["amp"] is not None:
        precision = "amp" if o["amp"] else "fp32"
    if o["use_amp"] is not None:
        precision = "amp" if o["use_amp"] else "fp32"
    nproc = o["nproc"]
    if o["distributed"] is False:
        nproc = 1
    world = nproc * o["nnodes"]
    if o["batch_size"] is not None and o["seed_batch_size"] is not None:
        raise ArcbenchError("give --batch-size (per process) or --batch_size (global), not both")
    if o["seed_batch_size"] is not None:
        global_batch = o["seed_batch_size"]
    else:
        per = o["batch_size"] if o["batch_size"] is not None else 64
        global_batch = per * world
    embedded = o["train_data"] is None
    # the embedded set: 3 epochs (9,600 images) and one verification at the end keep the
    # CPU run short; see README for the measured time and accuracy
    epochs = o["epochs"] if o["epochs"] is not None else (EMBEDDED_EPOCHS if embedded else DEFAULT_EPOCHS)
    lr = o["lr"]  # None: RunConfig's default for the optimizer
    if lr is None and embedded and o["optimizer"] == "sgd":
        lr = EMBEDDED_LR
    return RunConfig(
        mode="eval" if o["do_eval"] else "train", device=o["device"], backbone=backbone, head=o["head"],
        margin_s=o["margin_s"], margin_m=o["margin_m"], margin=o["margin"], sample_rate=o["sample_rate"],
        train_data=o["train_data"], annotation=o["annotation"],
        val_data=o["val_data"], val_pairs=o["val_pairs"], val_bin=_val_bins(o["val_bin"]), weights=o["weights"],
        epochs=epochs, max_steps=o["max_steps"], batch_size=global_batch, lr=lr,
        scale_lr=not o["no_lr_scaling"], optimizer=o["optimizer"], lr_schedule=o["lr_schedule"],
        warmup_steps=o["warmup_steps"], grad_clip=o["grad_clip"], precision=precision or "fp32",
        eval_precision=o["eval_precision"],
        compile=o["compile"] or o["compile_mode"] is not None, compile_mode=o["compile_mode"],
        amp_dtype=o["amp_dtype"], deterministic=o["deterministic"], channels_last=o["channels_last"], seed=o["seed"], nproc=nproc, nnodes=o["nnodes"],
        node_rank=o["node_rank"], master_addr=o["master_addr"], master_port=o["master_port"],
        workers=o["workers"], decode=o["decode"], eval_batch_size=o["eval_batch_size"], eval_flip=o["flip"],
        eval_every=o["eval_every"] if o["eval_every"] is not None else (0 if embedded else 1),
        checkpoint_every=o["checkpoint_every"], checkpoint_steps=o["checkpoint_steps"],
        log_interval=max(1, o["log_interval"]), on_bad_image=o["on_bad_image"], out=o["out"],
        run_id=o["run_id"], quiet=o["quiet"], synthetic_classes=o["synthetic_classes"],
        synthetic_steps=o["synthetic_steps"], collective_wait=o["collective_wait"],
        max_restarts=o.get("max_restarts") or 0,
    )


def _val_bins(given):
    """``--val-bin`` as the config keeps it: None, one path (as before several were allowed), or a list."""
    given = list(given or ())
    return None if not given else given[0] if len(given) == 1 else given


def _fmt(v, spec=""):
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _untimed(s: dict, warmup: int) -> str:
    """Why a run has no throughput figure, in words."""
    segment_steps = (s.get("steps") or 0) - (s.get("start_step") or 0)
    if segment_steps <= warmup:
        return f"- (only {segment_steps} step(s), not more than the {warmup} warm-up steps: nothing was timed)"
    return "- (no timed steps recorded)"


def _samples_classes(head) -> bool:
    """The head takes a sample rate (Partial FC): its class count and rate are worth a line."""
    from .. import registry

    return head in registry.heads_taking("sample_rate")


def print_summary(run_dir: str, s: dict, out_root: str, warmup: int = 5) -> None:
    from ..record.stats import MIN_TAIL_SAMPLES

    if not s:
        return
    mem = s.get("peak_memory")
    timed = s.get("throughput_median") is not None
    rows = [
        ("status", s.get("status")),
        ("device", f"{s.get('device')} ({s.get('device_name') or '-'})"),
        ("backbone / head", f"{s.get('backbone')} / {s.get('head')}"),
        ("precision", f"{s.get('precision')}" + (f" ({s['amp_dtype']})" if s.get("amp_dtype") else "")
         + (f" (verification {s['eval_precision']})" if s.get("eval_precision") else "")),
        ("processes x batch", f"{s.get('nproc')} x {s.get('per_process_batch')} (global {s.get('batch_size')})"
         + ("" if (s.get("nnodes") or 1) == 1 and not s.get("launcher") else
            f"; {s.get('nnodes') or 1} node{'' if (s.get('nnodes') or 1) == 1 else 's'}"
            + (f", started by {s['launcher']}" if s.get("launcher") else ""))),
        ("train / eval set", f"{s.get('train_set') or 'none'} / {s.get('eval_set') or 'none (no verification)'}"
         + ("  [synthetic]" if s.get("synthetic") else "")),
        ("epochs / steps", f"{_fmt(s.get('epochs'))} / {_fmt(s.get('steps'))}"),
        ("throughput (median)", f"{_fmt(s.get('throughput_median'), '.1f')} img/s "
                                f"(compute {_fmt(s.get('compute_ips'), '.1f')}, data wait "
                                f"{_fmt((s.get('data_wait_fraction') or 0) * 100, '.1f')}%)"
         if timed else _untimed(s, warmup)),
        ("step latency p50/p95/p99", "/".join(_fmt(s.get(k) and s[k] * 1000, ".1f")
                                             for k in ("latency_p50", "latency_p95", "latency_p99")) + " ms"
         + ("" if s.get("latency_p99") is not None or not s.get("timed_steps")
            else f" (p95/p99 need {MIN_TAIL_SAMPLES} timed steps, {s['timed_steps']} ran)")
         if timed else "- (nothing timed)"),
        ("peak memory", "-" if mem is None else f"{mem / 2**20:.0f} MiB ({s.get('peak_memory_kind', 'device')})"),
        ("final loss", _fmt(s.get("final_loss"), ".4f")),
        ("verification accuracy", "-" if s.get("lfw_accuracy") is None else
         f"{s['lfw_accuracy']:.4f} ± {s.get('lfw_accuracy_std') or 0:.4f} (best {_fmt(s.get('best_lfw_accuracy'), '.4f')})"
         + ("" if s.get("lfw_accuracy_exact") is None else
            f"; distances finer than the 0.01 grid: exact thresholds {s['lfw_accuracy_exact']:.4f}")),
        ("wall time", f"{_fmt(s.get('wall_time'), '.1f')} s"),
    ]
    if s.get("head_memory") is not None and _samples_classes(s.get("head")):
        mib = s["head_memory"] / 2**20
        rows.insert(3, ("classes / sample rate", f"{_fmt(s.get('num_classes'), ',')} / {_fmt(s.get('sample_rate'), 'g')}"
                        f" (head {mib:.{2 if mib < 10 else 0}f} MiB per process)"))
    per_set = s.get("verification") or {}
    if len(per_set) > 1:  # several sets: each one's figures and what verifying it took per point
        at = [k for k, _ in rows].index("verification accuracy") + 1
        rows[at:at] = [(f"  {name}", f"{v['accuracy']:.4f} ± {v.get('accuracy_std') or 0:.4f} (best "
                        f"{_fmt(v.get('best_accuracy'), '.4f')}), {_fmt(v.get('seconds'), '.1f')} s")
                       for name, v in per_set.items()]
    if s.get("bad_images"):
        listed = os.path.join(run_dir, BAD_IMAGES_FILE)
        rows.append(("bad images skipped", f"{s['bad_images']}"
                     + (f" (listed in {listed})" if os.path.exists(listed) else "")))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for k, v in rows:
        click.echo(f"  {k:<{width}}  {v}")
    bad = read_bad_images(run_dir) if s.get("bad_images") else []
    for where, why in bad[:3]:
        click.echo(f"  bad image: {where}: {why}")
    if len(bad) > 3:
        click.echo(f"  ... {len(bad) - 3} more in {os.path.join(run_dir, BAD_IMAGES_FILE)}")
    click.echo(f"\nrun directory: {run_dir}")
    click.echo(f"report:        arcbench report {shlex.quote(runs_folder(run_dir, out_root))}")


def runs_folder(run_dir: str, out_root: str) -> str:
    """The folder the run is in (a resumed run's, not --out's default), as short as it reads."""
    if not run_dir:
        return out_root
    folder = os.path.dirname(os.path.abspath(run_dir))
    rel = os.path.relpath(folder)
    return rel if len(rel) < len(folder) else folder
