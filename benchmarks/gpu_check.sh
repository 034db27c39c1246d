#!/usr/bin/env bash
# The `arcbench bench` matrix on a CUDA machine, written to ONE results JSON.
#
#   benchmarks/gpu_check.sh             # cuda: up to BUDGET_S (900 s); bench points default to 200+
#                                       # timed steps and 10+ s each (STEPS=20 for a quick look)
#   benchmarks/gpu_check.sh --dry-run   # the same script on the CPU with tiny batches and steps
#
# Matrix: mobilefacenet and iresnet50 x fp32 and amp x batch 128 and 512 x train and eval
# (synthetic data: compute only); then multi-process: with 2+ GPUs a 2-process run and a
# 1,2-process bench (per-rank cards from system.json), with one GPU `--nproc 1` and a
# `--nproc 2` that must be refused ("2 processes but 1 cuda card"); then the class-count row: Partial FC
# (`--num-classes 10575,93431,2000000 --sample-rate 1.0,0.1`, iresnet50, amp, batch 128; nproc 1,2 on
# 2+ GPUs) with the head's memory per card; then mobilefacenet train on real JPEGs (a synthetic-face
# set made with `arcbench data synth`) with the default worker count and with one worker per
# spare core, compared with the synthetic rate of the same point; each real-JPEG train row has a
# `--mode data` row beside it (the input pipeline alone: feed_ratio = data img/s / train img/s), and
# a data row at each matrix batch gives every synthetic train row its feed ratio ("feed" in the JSON);
# then the precision x compile rows:
# mobilefacenet train amp at batch 128 and 512 for each --amp-dtype (AMP_DTYPES) x --compile-mode
# (COMPILE_MODES; "none" is eager; a mode the device refuses is recorded as refused); then a short
# training loop under torch.cuda.set_sync_debug_mode("warn"), recording how many synchronising calls
# it reported per step (the loop's budget: one per log interval, plus one per timed window).
# Output: $OUT/gpu_results.json when OUT is set, else ./gpu_results.json (RESULTS overrides).
# Each `arcbench bench` call has a timeout and the whole script a time budget (BUDGET_S):
# points that do not fit are recorded as skipped, never silently dropped.
#
# Environment overrides: DEVICE BACKBONES PRECISIONS BATCHES MODES WARMUP STEPS REAL_BATCH
# REAL_PRECISION REAL_IDENTITIES REAL_IMAGES POINT_TIMEOUT_S BUDGET_S RESULTS KEEP_RUNS PYTHON
# CLASS_COUNTS CLASS_RATES CLASS_BACKBONE CLASS_BATCH CLASS_TIMEOUT_S AMP_DTYPES COMPILE_MODES
# MODE_BATCHES SYNC_STEPS
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done

if [ "$DRY" = 1 ]; then
  : "${DEVICE:=cpu}" "${BATCHES:=2}" "${WARMUP:=1}" "${STEPS:=2}" "${REAL_BATCH:=4}"
  : "${REAL_IDENTITIES:=8}" "${REAL_IMAGES:=4}" "${POINT_TIMEOUT_S:=600}" "${BUDGET_S:=1500}"
  : "${CLASS_COUNTS:=1000,20000}" "${CLASS_BACKBONE:=mobilefacenet}" "${CLASS_BATCH:=2}"
  # the CPU offers no CUDA graphs: reduce-overhead shows the one-line refusal; inductor's C++ compile
  # of a whole backbone would take most of the dry run's budget on a small host
  : "${COMPILE_MODES:=none,reduce-overhead}" "${MODE_BATCHES:=2}" "${SYNC_STEPS:=6}"
fi
export DRY DEVICE="${DEVICE:-cuda}" BACKBONES="${BACKBONES:-mobilefacenet,iresnet50}" \
  PRECISIONS="${PRECISIONS:-fp32,amp}" BATCHES="${BATCHES:-128,512}" MODES="${MODES:-train,eval}" \
  WARMUP="${WARMUP:-5}" STEPS="${STEPS:-}" REAL_BATCH="${REAL_BATCH:-512}" \
  REAL_PRECISION="${REAL_PRECISION:-amp}" REAL_IDENTITIES="${REAL_IDENTITIES:-400}" \
  REAL_IMAGES="${REAL_IMAGES:-40}" POINT_TIMEOUT_S="${POINT_TIMEOUT_S:-240}" BUDGET_S="${BUDGET_S:-900}" \
  KEEP_RUNS="${KEEP_RUNS:-0}" CLASS_COUNTS="${CLASS_COUNTS:-10575,93431,2000000}" \
  CLASS_RATES="${CLASS_RATES:-1.0,0.1}" CLASS_BACKBONE="${CLASS_BACKBONE:-iresnet50}" \
  CLASS_BATCH="${CLASS_BATCH:-128}" CLASS_TIMEOUT_S="${CLASS_TIMEOUT_S:-300}" \
  AMP_DTYPES="${AMP_DTYPES:-bf16,fp16}" MODE_BATCHES="${MODE_BATCHES:-128,512}" \
  COMPILE_MODES="${COMPILE_MODES:-none,default,reduce-overhead,max-autotune-no-cudagraphs}" \
  SYNC_STEPS="${SYNC_STEPS:-60}"
if [ -n "${RESULTS:-}" ]; then :
elif [ -n "${OUT:-}" ]; then RESULTS="$OUT/gpu_results.json"
else RESULTS="$PWD/gpu_results.json"; fi
export RESULTS
PYTHON="${PYTHON:-python}"

exec "$PYTHON" - <<'PY'
import json, os, platform, shutil, subprocess, sys, tempfile, time

env = os.environ
DRY = env["DRY"] == "1"
DEVICE, RESULTS = env["DEVICE"], env["RESULTS"]
BACKBONES = [b for b in env["BACKBONES"].split(",") if b]
MODES = [m for m in env["MODES"].split(",") if m]
POINT_TIMEOUT, BUDGET = float(env["POINT_TIMEOUT_S"]), float(env["BUDGET_S"])
TARGETS = {"mobilefacenet_amp_train_img_s": 20000, "iresnet50_amp_train_img_s": 4000,
           "real_over_synthetic": 0.5}
t_start = time.time()
work = tempfile.mkdtemp(prefix="arcbench-gpu-check-")
runs = os.path.join(work, "runs")
out = {"script": "benchmarks/gpu_check.sh" + (" --dry-run" if DRY else ""), "dry_run": DRY,
       "device": DEVICE, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
       "host": platform.node(), "cpus": os.cpu_count(), "targets": TARGETS, "synthetic_note":
       "synthetic rows are compute only (random tensors on the device); never compare them with real-data "
       "references", "calls": [], "rows": [], "skipped": [], "errors": []}


def save():
    out["seconds"] = round(time.time() - t_start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(RESULTS)), exist_ok=True)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, RESULTS)


def run(cmd, timeout):
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, so, se = "timeout", exc.stdout or "", exc.stderr or ""
        so = so.decode() if isinstance(so, bytes) else so
        se = se.decode() if isinstance(se, bytes) else se
    call = {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.time() - t, 1)}
    if rc != 0:
        call["stderr_tail"] = se[-2000:]
    out["calls"].append(call)
    return rc, so, call


def left():
    return BUDGET - (time.time() - t_start)


def bench(label, backbone, mode, precisions, batches, data="synthetic", workers=None, nprocs="1", extra=(),
          timeout=None):
    if left() < 20:
        out["skipped"].append({"label": label, "reason": f"time budget of {BUDGET:.0f}s spent"})
        print(f"skip {label}: time budget spent", flush=True)
        return []
    cmd = [sys.executable, "-m", "arcbench", "bench", "--device", DEVICE, "--backbone", backbone,
           "--mode", mode, "--precision", precisions, "--batch-size", batches, "--warmup", env["WARMUP"],
           *(["--steps", env["STEPS"]] if env.get("STEPS") else []), "--data", data, "--nproc", nprocs, "--out", runs, "--json"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    cmd += list(extra)
    print(f"{label}: {' '.join(cmd[2:])}", flush=True)
    rc, so, call = run(cmd, min(timeout or POINT_TIMEOUT, max(left(), 20)))
    rows = []
    if rc == 0:
        try:
            rows = json.loads(so)
        except ValueError as exc:
            out["errors"].append({"label": label, "error": f"unparsable JSON: {exc}", "stdout_tail": so[-1000:]})
    else:
        out["errors"].append({"label": label, "rc": rc, "stderr_tail": call.get("stderr_tail", "")})
    for r in rows:
        r["label"] = label
        r.pop("run_dir", None)
        tput = r.get("throughput_median")
        classes = (f" {r['num_classes']:,} classes r={r.get('sample_rate')} head "
                   f"{(r.get('head_memory') or r.get('head_memory_planned') or 0) / 2**30:.2f} GiB"
                   if r.get("head") == "partial_fc" and r.get("num_classes") else "")
        print(f"  {r.get('backbone')} {r.get('mode')} {r.get('precision')} batch {r.get('batch_size')}{classes}: "
              f"{tput if tput is None else round(tput, 1)} img/s  status {r.get('status')}", flush=True)
    out["rows"].extend(rows)
    save()
    return rows


def describe():
    code = ("import json, torch; d = {'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] "
            "if torch.cuda.is_available() else []}; print(json.dumps(d))")
    rc, so, _ = run([sys.executable, "-c", code], 120)
    if rc == 0:
        out.update(json.loads(so))
    if shutil.which("nvidia-smi"):
        rc, so, _ = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                         "--format=csv,noheader"], 30)
        out["nvidia_smi"] = so.strip() if rc == 0 else None


describe()
save()
precisions, batches = env["PRECISIONS"], env["BATCHES"]
# the most informative points first, so a budget overrun loses the least
order = [(b, m) for m in MODES if m == "train" for b in BACKBONES] + \
        [(b, m) for m in MODES if m != "train" for b in BACKBONES]
for backbone, mode in order:
    bench(f"synthetic-{backbone}-{mode}", backbone, mode, precisions, batches)

# multi-process: each rank on its own card (2+ cards), or one card refusing 2 processes
def multi_process():
    cards = len(out.get("gpus") or []) if not DRY else 2
    out["multi_process"] = mp = {"cards": cards}
    base = [sys.executable, "-m", "arcbench", "run", "--device", DEVICE, "--backbone", "mobilefacenet",
            "--train-data", "synthetic", "--synthetic-steps", env.get("STEPS") or "20", "--epochs", "1",
            "--batch-size", env["REAL_BATCH"], "--quiet"]
    for n in ([2] if cards >= 2 else [1, 2]):
        if left() < 30:
            out["skipped"].append({"label": f"run-nproc{n}", "reason": "time budget spent"})
            continue
        folder = os.path.join(work, f"mp{n}")
        rc, so, call = run(base + ["--nproc", str(n), "--out", folder], min(POINT_TIMEOUT, max(left(), 30)))
        row = {"nproc": n, "rc": rc}
        if n > cards:  # must be refused in one line, before anything starts
            row["refused"] = rc == 2 and f"{n} processes but {cards} {DEVICE} card" in call.get("stderr_tail", "")
        else:
            dirs = [os.path.join(folder, d) for d in os.listdir(folder)] if os.path.isdir(folder) else []
            for d in dirs:
                with open(os.path.join(d, "summary.json")) as fh:
                    s = json.load(fh)
                with open(os.path.join(d, "system.json")) as fh:
                    row["placements"] = json.load(fh).get("placements")
                row.update(status=s.get("status"), throughput_median=s.get("throughput_median"),
                           throughput_per_rank=s.get("throughput_per_rank"), card_per_rank=s.get("card_per_rank"))
        print(f"  run --nproc {n}: {row}", flush=True)
        mp.setdefault("runs", []).append(row)
        save()
    if cards >= 2:
        bench("multi-process-bench-mobilefacenet", "mobilefacenet", "train", env["REAL_PRECISION"],
              env["REAL_BATCH"], nprocs="1,2")


multi_process()

# class-count row: Partial FC over CASIA-WebFace / MS1MV3 / WebFace42M identity counts, r = 1.0 and 0.1;
# a point whose head cannot fit the card is a row with status "skipped (does not fit)" and its reason
cards = len(out.get("gpus") or []) if not DRY else 1
bench(f"class-count-{env['CLASS_BACKBONE']}-partial-fc", env["CLASS_BACKBONE"], "train", env["REAL_PRECISION"],
      env["CLASS_BATCH"], nprocs="1,2" if cards >= 2 else "1",
      extra=["--num-classes", env["CLASS_COUNTS"], "--sample-rate", env["CLASS_RATES"]],
      timeout=float(env["CLASS_TIMEOUT_S"]))

# real JPEGs: the synthetic-face set, mobilefacenet train at REAL_BATCH / REAL_PRECISION
real = os.path.join(work, "faces")
rc, so, call = run([sys.executable, "-m", "arcbench", "data", "synth", "--out", real,
                    "--identities", env["REAL_IDENTITIES"], "--images-per-identity", env["REAL_IMAGES"],
                    "--verify-identities", "0"], min(300, max(left(), 30)))
if rc == 0:
    spare = max(1, (os.cpu_count() or 2) - 1)
    from_default = bench("real-jpeg-mobilefacenet-train-default-workers", "mobilefacenet", "data,train",
                         env["REAL_PRECISION"], env["REAL_BATCH"], data=real)
    more = bench(f"real-jpeg-mobilefacenet-train-{spare}-workers", "mobilefacenet", "data,train",
                 env["REAL_PRECISION"], env["REAL_BATCH"], data=real, workers=spare)
    # can this host feed the card at the synthetic (compute-only) rate? data rows at the matrix batches
    feed = {r.get("per_process_batch"): r for r in bench("real-jpeg-data-matrix-batches", "mobilefacenet",
                                                           "data", "fp32", batches, data=real)}
    out["feed"] = [{"label": r["label"], "backbone": r.get("backbone"), "precision": r.get("precision"),
                    "batch_size": r.get("batch_size"), "train_img_s": r.get("throughput_median"),
                    "data_img_s": (feed.get(r.get("per_process_batch")) or {}).get("throughput_median"),
                    "workers": (feed.get(r.get("per_process_batch")) or {}).get("workers")}
                   for r in out["rows"] if r["label"].startswith("synthetic-") and r.get("mode") == "train"]
    for f in out["feed"]:
        f["feed_ratio"] = f["data_img_s"] / f["train_img_s"] if f["data_img_s"] and f["train_img_s"] else None
    synth = [r for r in out["rows"] if r["label"] == "synthetic-mobilefacenet-train"
             and r.get("precision") == env["REAL_PRECISION"] and str(r.get("batch_size")) == env["REAL_BATCH"]]
    if not synth:  # the matrix did not hold this point: measure it here, side by side
        synth = bench("synthetic-mobilefacenet-train-reference-point", "mobilefacenet", "train",
                      env["REAL_PRECISION"], env["REAL_BATCH"])
    ref = synth[0].get("throughput_median") if synth else None
    out["real_vs_synthetic"] = [
        {"label": r["label"], "real_img_s": r.get("throughput_median"), "synthetic_img_s": ref,
         "ratio": (r["throughput_median"] / ref) if ref and r.get("throughput_median") else None,
         "data_wait_fraction": r.get("data_wait_fraction")}
        for r in from_default + more if r.get("mode") == "train"]
else:
    out["errors"].append({"label": "arcbench data synth", "rc": rc, "stderr_tail": call.get("stderr_tail", "")})

# precision x compile rows: each --amp-dtype with each --compile-mode, mobilefacenet train amp
out["precision_compile"] = pc = []
for dtype in [d for d in env["AMP_DTYPES"].split(",") if d]:
    for mode in [m for m in env["COMPILE_MODES"].split(",") if m]:
        label = f"amp-{dtype}-compile-{mode}"
        extra = ["--amp-dtype", dtype] + ([] if mode == "none" else ["--compile-mode", mode])
        n_calls = len(out["calls"])
        rows = bench(label, "mobilefacenet", "train", "amp", env["MODE_BATCHES"], extra=extra)
        call = out["calls"][-1] if len(out["calls"]) > n_calls else {}
        refused = call.get("rc") == 2 and "is not supported on" in call.get("stderr_tail", "")
        if refused:  # the device plugin does not offer this mode: a recorded refusal, not an error
            out["errors"] = [e for e in out["errors"] if e.get("label") != label]
            out["skipped"].append({"label": label, "reason": call["stderr_tail"].strip().splitlines()[-1]})
        pc.append({"amp_dtype": dtype, "compile_mode": mode, "refused": refused,
                   "img_s": {r.get("batch_size"): r.get("throughput_median") for r in rows}})
save()

# implicit syncs: a short training loop under torch.cuda.set_sync_debug_mode("warn")
SYNC_CODE = r"""
import json, sys, warnings, torch
from arcbench.config import RunConfig
from arcbench import runner
device, steps, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cuda = device == "cuda" and torch.cuda.is_available()
if cuda:
    torch.cuda.set_sync_debug_mode("warn")
cfg = RunConfig(device=device, backbone="mobilefacenet", train_data="synthetic", synthetic_steps=steps,
                epochs=1, batch_size=128 if cuda else 2, precision="amp", log_interval=20, quiet=True,
                out=out_dir, eval_every=0, checkpoint_every=0)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    _, summary = runner.execute(cfg)
syncs = [str(w.message).splitlines()[0][:160] for w in seen if "synchroniz" in str(w.message).lower()]
print(json.dumps({"sync_debug_mode": "warn" if cuda else None, "steps": steps,
                  "reported_syncs": len(syncs) if cuda else None, "examples": sorted(set(syncs))[:10],
                  "step_timer": summary.get("step_timer"), "amp_dtype": summary.get("amp_dtype"),
                  "status": summary.get("status"),
                  "note": None if cuda else "set_sync_debug_mode is CUDA's: not counted on " + device}))
"""
if left() > 30:
    rc, so, call = run([sys.executable, "-c", SYNC_CODE, DEVICE, env["SYNC_STEPS"], os.path.join(work, "sync")],
                       min(POINT_TIMEOUT, max(left(), 30)))
    try:
        out["sync_check"] = json.loads(so.strip().splitlines()[-1]) if rc == 0 else {"rc": rc}
    except (ValueError, IndexError):
        out["sync_check"] = {"rc": rc, "stdout_tail": so[-1000:]}
    print(f"sync check: {out['sync_check']}", flush=True)
else:
    out["skipped"].append({"label": "sync-check", "reason": "time budget spent"})
save()

# headline figures against the (not yet measured) targets: reported, never asserted
def best(backbone, precision="amp", mode="train"):
    vals = [r.get("throughput_median") or 0 for r in out["rows"] if r.get("label", "").startswith("synthetic")
            and r.get("backbone") == backbone and r.get("precision") == precision and r.get("mode") == mode]
    return max(vals) if vals else None

ratios = [x["ratio"] for x in out.get("real_vs_synthetic", []) if x["ratio"]]
out["headline"] = {
    "mobilefacenet_amp_train_img_s": best("mobilefacenet"),
    "iresnet50_amp_train_img_s": best("iresnet50"),
    "real_over_synthetic": max(ratios) if ratios else None,
}
out["headline"]["against_targets"] = "dry run: figures are not comparable with the H200 targets" if DRY else {
    k: (None if out["headline"][k] is None else ("met" if out["headline"][k] >= t else "not met"))
    for k, t in TARGETS.items()}
if env["KEEP_RUNS"] == "1":
    out["runs_dir"] = runs
else:
    shutil.rmtree(work, ignore_errors=True)
save()
print(json.dumps(out["headline"], indent=2))
print(f"wrote {RESULTS} ({len(out['rows'])} rows, {len(out['errors'])} errors, {len(out['skipped'])} skipped, "
      f"{out['seconds']}s)")
sys.exit(0 if out["rows"] else 1)
PY
