#!/usr/bin/env bash
# gpu-check.sh: one time-boxed GPU check of cnn-harness on a fresh device machine (H100 or H200).
#
# Run it from the project root on the device machine, e.g. (as the device tool's command, limit 540 s):
#     bash scripts/gpu-check.sh
# Everything it keeps lands in $OUT (default ./gpu-check-out): at most 7 files, since the device
# tool brings back 8 at most, each under 16 MiB:
#     summary.txt  summary.tsv  runs.csv  throughput.csv  gpu_util.csv  env.txt  gpu-check-logs.tar.gz
# The summary table is printed last, so it is in the tool's output_tail.
#
# Machine facts this relies on (the device tool's README):
#   * python3 has torch, torchvision, numpy, numba, pyyaml, matplotlib; NOT ray, wandb, optuna or ffcv.
#   * no network: pip works only with --no-index (and --no-build-isolation for `-e .`).
#   * 16 CPU cores, 1 GPU; nvidia-smi works (read-only queries only here).
# Data: $HARNESS_DATA_DIR with cifar10/cifar10.npz if present. The shared cifar10.npz is 134 MiB,
#   over the 64 MiB a `run` call carries, so on the device it is normally absent and the script
#   falls back to synthetic CIFAR-shaped data (50,000 images, 3x32x32: same shapes and step counts).
# Ray: optional. Put wheels in ./.whl and name .whl in `carry` (device README, Notes); they are
#   installed into /tmp/site. Ray and its needs likely exceed 64 MiB, so expect the Ray step to SKIP.
#
# Order: what a call cut short must still have comes first: install, import, data (everything needs
#   them), compile-r9 (recompiles counted), bench-speed94, the 1-epoch probes (fp16 + GradScaler,
#   data.layout=airbench, muon, --deterministic and its refusal); then bench-overhead, gpu-sanity, the
#   3-epoch runs, sync-probe, bench-loaders, ray. A failing step never stops the rest.
# Time boxes, seconds (cap; a step starts only if its minimum still fits the budget):
#     install 30, import 30, data 30, compile-r9 140, bench-speed94 90,
#     probe-fp16 35, probe-layout 35, probe-muon 35, probe-det 35, probe-det-refused 20   = 480
#     bench-overhead 90, gpu-sanity 60, run-r9-auto 90, run-r9-noaug 60, sync-probe 60,
#     bench-loaders 90, ray-r9-w1 120                                                       = 570
#   (install-wheels 60 runs first only where .whl is carried; its time comes out of the later steps.)
#   The steps share GPU_CHECK_BUDGET_S (default 480 s, counted from the script's start), and a step's
#   limit is min(its cap, what is left). The first ten's caps add up to the budget, so only the few
#   seconds before them (env.txt, the torch check) can shorten a box, the last probe's; the rest run in
#   the time the first ten leave (estimated ~250 s: those take ~200 s on an H200, not yet measured).
#   Worst case: 480 budget + 5 kill grace of the step running at its end (timeout -k) + 30 wrap-up
#   (each command in it under its own timeout) = 515 s < 540 s.
# DRY_RUN=1 (tests/test_gpu_check.py, on the CPU): every step runs a stand-in that prints its command
#   instead of the command, so the order, the summary and the budget are checked in a second;
#   DRY_FAIL_STEP=NAME makes that step's stand-in fail, to check that the rest still run.

set -u -o pipefail

ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
KILL_GRACE=5    # seconds between a step's TERM and its KILL (counted in the worst case above)
WRAPUP_MAX=30   # the wrap-up's own timeouts added up (ditto)
DRY=${DRY_RUN:-0}
T0=$(date +%s)
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS" "$WORK/runs" "$WORK/results" "$WORK/cache"
TSV=$OUT/summary.tsv
RUNS_CSV=$OUT/runs.csv
TP_CSV=$WORK/throughput.csv
printf 'step\tstatus\tseconds\tcap_s\tstart_unix\tend_unix\tnote\n' >"$TSV"

export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HARNESS_CACHE_DIR=$WORK/cache
export HARNESS_RESULTS_DIR=$WORK/results
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
export TRITON_CACHE_DIR=$WORK/triton
export WANDB_MODE=disabled
PY=${PYTHON:-python3}
H="$PY -m harness"   # works with or without the editable install (harness/__main__.py)

log() { echo "[gpu-check $(( $(date +%s) - T0 ))s] $*"; }

# row NAME STATUS SECONDS CAP START END NOTE: one line of summary.tsv.
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$TSV"; }

# The dry run's stand-in for a step's command: print it (so the note shows it), fail where asked.
dry_cmd() {
    local name=$1; shift
    echo "METRIC dry: $*" | sed "s#$WORK#\$WORK#g; s#$PY -m harness#harness#g"
    [[ $name != "${DRY_FAIL_STEP:-}" ]]
}

# step NAME MAX_S MIN_S CMD...: run CMD under timeout, log to $LOGS/NAME.log, add a row to summary.tsv.
step() {
    local name=$1 max=$2 min=$3; shift 3
    local now left lim start end rc status note
    now=$(date +%s); left=$(( BUDGET - (now - T0) ))
    if (( left < min )); then
        row "$name" SKIP 0 "$max" "$now" "$now" "budget: ${left}s left, step needs ${min}s"
        log "$name: SKIP (budget)"; return 0
    fi
    lim=$(( max < left ? max : left ))
    (( DRY )) && set -- dry_cmd "$name" "$@"
    log "$name: start (limit ${lim}s)"
    start=$(date +%s)
    if (( DRY )); then "$@"; else timeout -k "$KILL_GRACE" "$lim" "$@"; fi >"$LOGS/$name.log" 2>&1
    rc=$?
    end=$(date +%s)
    case $rc in
        0) status=OK; (( DRY )) && status=DRY ;;
        124|137) status=TIMEOUT ;;
        *) status="FAIL($rc)" ;;
    esac
    note=$(step_note "$name" 2>/dev/null | tr '\t\n' '  ' | cut -c1-400)
    if [[ $status != OK && $status != DRY ]]; then
        note="$note | last: $(grep -v '^\s*$' "$LOGS/$name.log" | tail -n 1 | tr '\t' ' ' | cut -c1-200)"
    fi
    row "$name" "$status" "$(( end - start ))" "$max" "$start" "$end" "$note"
    log "$name: $status in $(( end - start ))s"
    return 0
}

skip() {  # skip NAME CAP_S REASON
    local now; now=$(date +%s)
    row "$1" SKIP 0 "$2" "$now" "$now" "$3"
    log "$1: SKIP ($3)"
}

# gpu_step: like step, but skipped when torch sees no CUDA device (the run would crawl on the CPU).
gpu_step() {
    if (( HAVE_CUDA )); then step "$@"; else skip "$1" "$2" "no CUDA device (see the import step)"; fi
}

# What goes into a step's note: METRIC lines, the run summary of `harness run`, recompile counts.
step_note() {
    local name=$1 f=$LOGS/$1.log
    grep '^METRIC ' "$f" | sed 's/^METRIC //' | paste -sd ';' -
    (( DRY )) && return 0
    case $name in
        *-refused) ;;
        run-*|compile-*|ray-*|probe-*) "$PY" "$WORK/runinfo.py" "$f" "$name" "$RUNS_CSV" "$LOGS/rundirs/$name" ;;
    esac
    case $name in
        compile-*) echo "recompiles=$(grep -c 'Recompiling function' "$f")"
                   grep -m3 -A2 'Recompiling function' "$f" | grep -o "guard failure.*\|expected .*actual .*\|___check_obj_id.*\|training.*" | head -n 3 | paste -sd ';' - ;;
        bench-loaders) grep -E '^(tensor|torchvision|ffcv) ' "$f" | awk '{print $1"/"$2"="$4}' | paste -sd ' ' - ;;
        bench-overhead) grep -E '^(bare|inprocess|ray) ' "$f" | awk '{print $1"="$2"img/s"}' | paste -sd ' ' - ;;
        bench-speed*) grep -E '^(speed94|airbench94) ' "$f" | tr -s ' ' | paste -sd ';' - ;;
    esac
}

# ------------------------------------------------------------------ helper programs
cat >"$WORK/runinfo.py" <<'EOF'
"""Summarise one `harness run` log: the run directory is its last line (summary.json inside)."""
import csv, json, shutil, sys
from pathlib import Path
log, step, out_csv, keep = sys.argv[1:5]
lines = [l.strip() for l in Path(log).read_text(errors="replace").splitlines() if l.strip()]
run_dir = next((Path(l) for l in reversed(lines) if l.startswith("/") and (Path(l) / "summary.json").is_file()), None)
if run_dir is None:
    print("no summary.json"); sys.exit(0)
s = json.loads((run_dir / "summary.json").read_text())
cols = ["step", "arch", "dataset", "loader", "precision", "device", "world_size", "epochs_run", "batch_size",
        "train_img_per_s", "infer_img_per_s", "test_acc", "val_acc", "total_s", "train_s", "peak_mem_mb",
        "stop_reason", "hardware", "torch", "ray"]
row = {"step": step, **{k: s.get(k) for k in cols[1:]}}
new = not Path(out_csv).exists()
with open(out_csv, "a", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
    if new:
        w.writeheader()
    w.writerow(row)
Path(keep).mkdir(parents=True, exist_ok=True)
for name in ("summary.json", "metrics.csv", "config.yaml", "classification_report.csv"):
    if (run_dir / name).is_file():
        shutil.copy2(run_dir / name, Path(keep) / name)
f = lambda v: (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}") if isinstance(v, float) else str(v)
print(f"img/s={f(s.get('train_img_per_s'))} test_acc={f(s.get('test_acc'))} prec={s.get('precision')} "
      f"loader={s.get('loader')} dev={s.get('device')} ws={s.get('world_size')} epochs={s.get('epochs_run')} "
      f"total_s={f(s.get('total_s'))} train_s={f(s.get('train_s'))} peak_MB={f(s.get('peak_mem_mb'))} "
      f"infer/s={f(s.get('infer_img_per_s'))}")
# What a probe asked for, as the run resolved it: the saved config says whether the option took effect.
if step.startswith("probe-") and (run_dir / "config.yaml").is_file():
    import yaml
    c = yaml.safe_load((run_dir / "config.yaml").read_text())
    print(f"optim={c['optim']['name']} layout={c['data']['layout']} deterministic={c['train']['deterministic']}")
EOF

cat >"$WORK/sanity.py" <<'EOF'
"""GPU facts, the bf16 matmul ceiling, and a bare GPU training loop (data already on the GPU)."""
import sys, time
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if not torch.cuda.is_available():
    print("METRIC no CUDA device"); sys.exit(3)
p = torch.cuda.get_device_properties(0)
try:
    emu = torch.cuda.is_bf16_supported(including_emulation=False)
except TypeError:
    emu = "n/a"
print(f"METRIC {p.name} cc{p.major}.{p.minor} {p.multi_processor_count}SM {p.total_memory / 2**30:.0f}GiB "
      f"bf16={torch.cuda.is_bf16_supported()} bf16_native={emu}")
ev = lambda: torch.cuda.Event(enable_timing=True)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
s, e = ev(), ev(); torch.cuda.synchronize(); s.record()
for _ in range(10): a @ b
e.record(); torch.cuda.synchronize()
print(f"METRIC bf16_mm={2 * 8192**3 / (s.elapsed_time(e) / 10) / 1e9:.0f}TFLOP/s")
del a, b
sys.path.insert(0, ".")
from architectures import create_model
torch.backends.cudnn.benchmark = True
for arch in ("resnet9", "resnet20"):
    for bs in (512,):
        torch.manual_seed(0)
        m = create_model(arch, num_classes=10).cuda().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        crit = torch.nn.CrossEntropyLoss()
        x = torch.randn(bs, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,), device="cuda")
        def one():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = crit(m(x), y)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        for _ in range(15): one()
        s, e = ev(), ev(); torch.cuda.synchronize(); s.record()
        for _ in range(40): one()
        e.record(); torch.cuda.synchronize()
        ms = s.elapsed_time(e) / 40
        print(f"METRIC bare_gpu_{arch}_bs{bs}={bs / ms * 1000:,.0f}img/s ({ms:.2f}ms/step)")
EOF

cat >"$WORK/sync_probe.py" <<'EOF'
"""Where the GPU path synchronises with the host: CUDA sync-debug warnings, grouped by source line.

1. The tensor loader alone on CUDA, per augmentation preset: implicit syncs per batch and ms/batch.
2. One short in-process `harness` training run (resnet20, 1 epoch, synthetic): every implicit sync in
   the loop, by file:line (setup syncs show up once; per-step ones ~ once per step).
"""
import collections, sys, time, warnings
from pathlib import Path
import torch
sys.path.insert(0, ".")
from loaders import DataOptions, build_loader, load_splits

work = sys.argv[1]
sp = load_splits(DataOptions("synthetic", synthetic_size=20480, val_fraction=0.0, seed=0))
for preset in ("none", "base", "strong", "stronger"):
    ld = build_loader(sp.train, sp.meta, backend="tensor", train=True, batch_size=512, augment=preset,
                      device="cuda", channels_last=True)
    it = iter(ld)
    for _ in range(3): next(it)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        for _ in range(5): next(it)
        torch.cuda.set_sync_debug_mode("default")
    syncs = sum(1 for m in w if "synchroniz" in str(m.message).lower())
    ld.set_epoch(1); it = iter(ld); next(it); torch.cuda.synchronize()
    t, n = time.perf_counter(), 0
    for x, y in it:
        n += 1
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"METRIC loader/{preset}: {syncs / 5:.1f} syncs/batch {1000 * dt / n:.2f}ms/batch")

from harness.run.config import RunConfig, apply_overrides
from harness.run.trainer import fit
cfg = apply_overrides(RunConfig(), {
    "model.arch": "resnet20", "data.dataset": "synthetic", "data.synthetic_size": 11378, "train.epochs": 1,
    "train.batch_size": 512, "data.loader": "tensor", "data.augment": "base", "train.measure_inference": False,
    "train.progress": False, "out": str(Path(work) / "runs-probe"), "name": "syncprobe"})
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        fit(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
where = collections.Counter(f"{Path(m.filename).parent.name}/{Path(m.filename).name}:{m.lineno}" for m in w
                            if "synchroniz" in str(m.message).lower())
steps = 20  # 10240 training images / 512
print(f"train loop: {sum(where.values())} implicit syncs in 1 epoch of {steps} steps; by source line:")
for loc, n in where.most_common(15):
    print(f"  {n:5d}  {loc}")
top = ", ".join(f"{loc}x{n}" for loc, n in where.most_common(4))
print(f"METRIC loop: {sum(where.values())} syncs/{steps} steps; top {top}")
EOF

cat >"$WORK/expect_exit.py" <<'EOF'
"""Run a command that must be refused: exit WANT with a one-line error, before any training."""
import subprocess, sys
want, cmd = int(sys.argv[1]), sys.argv[2:]
p = subprocess.run(cmd, capture_output=True, text=True)
err = [l for l in p.stderr.splitlines() if l.strip()]
print(p.stdout, p.stderr, sep="\n")
ok = p.returncode == want and len(err) == 1
print(f"METRIC exit {p.returncode} (want {want}), {len(err)} stderr line(s){'' if ok else ': NOT as expected'}: "
      f"{err[-1][:160] if err else ''}")
sys.exit(0 if ok else 1)
EOF

# ------------------------------------------------------------------ 0. environment, GPU monitor
# (inside the budget: T0 is already set; every command here has its own timeout)
{
    echo "date: $(date -u +%FT%TZ)"; echo "root: $ROOT"; echo "uname: $(uname -a)"
    echo "python: $(command -v "$PY") $(timeout 10 "$PY" -V 2>&1)"
    (( DRY )) && echo "DRY_RUN=1: commands printed, not run"
    if (( ! DRY )); then
        timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv 2>&1
        timeout 20 "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|triton|numpy|numba|ray|ffcv|wandb|optuna|pyyaml|tensorboard|matplotlib|setuptools) ' || true
    fi
    git -C "$ROOT" rev-parse HEAD 2>/dev/null | sed 's/^/git: /'
    git -C "$ROOT" status --short 2>/dev/null | head -n 20
} >"$OUT/env.txt" 2>&1
SMI_PID=""
if (( ! DRY )) && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,clocks.sm,power.draw \
        --format=csv,nounits -lms 500 >"$OUT/gpu_util.csv" 2>/dev/null &
    SMI_PID=$!
fi

# ------------------------------------------------------------------ 1. install, import (CUDA? Ray?)
if [[ -d .whl ]] && compgen -G '.whl/*.whl' >/dev/null; then
    step install-wheels 60 10 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if (( DRY )) || timeout 20 "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    # No network and no build isolation: setuptools must come from the image. On failure the
    # checkout stays importable through PYTHONPATH (python3 -m harness).
    step install 30 10 "$PY" -m pip install --no-deps --no-build-isolation --no-index -e .
else
    skip install 30 "torch/torchvision missing: needs torch>=2.1 + torchvision>=0.16 wheels (cu13) in .whl"
fi
# The import step also finds out whether there is a GPU and Ray, inside its time box; it writes what it
# found before importing the project, so a broken project import does not hide the GPU from later steps.
step import 30 5 "$PY" -c "
import torch
cuda = torch.cuda.is_available()
try:
    import ray.train.torch, ray.tune
    ray = 1
except Exception:
    ray = 0
open('$WORK/have.sh', 'w').write(f'HAVE_CUDA={int(cuda)}\nHAVE_RAY={ray}\n')
import harness.cli, loaders, architectures
print(f'METRIC import ok; cuda={cuda} ray={bool(ray)}')"
HAVE_CUDA=0 HAVE_RAY=0
[[ -f $WORK/have.sh ]] && source "$WORK/have.sh"
(( DRY )) && HAVE_CUDA=1 HAVE_RAY=0   # as on the device: a GPU, no Ray

# ------------------------------------------------------------------ 2. data
DATA_DIR=${HARNESS_DATA_DIR:-}
if [[ -z $DATA_DIR ]]; then
    for d in "$ROOT/data" "$ROOT/shared/data" "$ROOT/../shared/data"; do
        [[ -f $d/cifar10/cifar10.npz || -d $d/cifar-10-batches-py ]] && { DATA_DIR=$d; break; }
    done
fi
if [[ -n $DATA_DIR && ( -f $DATA_DIR/cifar10/cifar10.npz || -f $DATA_DIR/cifar10.npz || -d $DATA_DIR/cifar-10-batches-py ) ]]; then
    DSNAME=cifar10; DS=(--dataset cifar10 --data-dir "$DATA_DIR")
else
    DSNAME=synthetic; DATA_DIR=$WORK/no-data; mkdir -p "$DATA_DIR"
    DS=(--dataset synthetic --set data.synthetic_size=50000)
fi
export HARNESS_DATA_DIR=$DATA_DIR
echo "dataset: $DSNAME ($DATA_DIR)" >>"$OUT/env.txt"
# Decode once (the LZMA npz takes ~15 s) so that the timed steps below read the cache.
step data 30 10 "$PY" -c "
from loaders import DataOptions, load_splits
s = load_splits(DataOptions('$DSNAME', data_dir='$DATA_DIR', synthetic_size=50000))
print('METRIC $DSNAME', tuple(s.train.images.shape), 'train', len(s.val.labels), 'val', len(s.test.labels), 'test')"

# What the in-process runs share: same data, batch and schedule; the probes add a 1-epoch run.
COMMON=(--arch resnet9 "${DS[@]}" --batch-size 512 --lr-scaling linear --scheduler onecycle --out "$WORK/runs")
PROBE=(--epochs 1 --loader tensor --augment base --set train.measure_inference=false)

# ------------------------------------------------------------------ 3. torch.compile (recompiles logged)
gpu_step compile-r9 140 60 env TORCH_LOGS=recompiles $H run "${COMMON[@]}" --epochs 2 --loader tensor --augment base \
    --compile --name r9-compile --set train.measure_inference=false

# ------------------------------------------------------------------ 4. time to 94% (the speed track)
# speed94 (airbench94's recipe) timed as the records time it; the airbench package runs beside it when
# its wheel is carried (.whl) and imports. On synthetic data the target is not meaningful: it times the steps.
SPEED_DS=(--data-dir "$DATA_DIR")
[[ $DSNAME == synthetic ]] && SPEED_DS=(--set data.dataset=synthetic --set data.synthetic_size=50000)
gpu_step bench-speed94 90 45 $H bench speed --recipe speed94 --target 0.94 --runs 3 "${SPEED_DS[@]}" \
    --runs-dir "$WORK/runs" --out "$TP_CSV"

# ------------------------------------------------------------------ 5. 1-epoch probes of CUDA-only paths
# These paths run only on a GPU, so the CPU suite cannot cover them: does each train, and how fast.
gpu_step probe-fp16 35 20 $H run "${COMMON[@]}" "${PROBE[@]}" --precision fp16 --name p-fp16
# The split stored normalised in half precision on the device (needs bf16/fp16 and the tensor loader).
gpu_step probe-layout 35 20 $H run "${COMMON[@]}" "${PROBE[@]}" --precision bf16 --set data.layout=airbench \
    --name p-layout
gpu_step probe-muon 35 20 $H run "${COMMON[@]}" "${PROBE[@]}" --optimizer muon --name p-muon
# resnet20 ends in an adaptive average pool to 1x1, which the harness allows under --deterministic (a mean).
gpu_step probe-det 35 20 $H run --arch resnet20 "${DS[@]}" --batch-size 512 --out "$WORK/runs" "${PROBE[@]}" \
    --deterministic --name p-det
# tv_vgg16's 7x7 adaptive pool has no deterministic CUDA backward: refused in one line, exit 2, no training.
gpu_step probe-det-refused 20 10 "$PY" "$WORK/expect_exit.py" 2 $H run --arch tv_vgg16 "${DS[@]}" \
    --out "$WORK/runs" "${PROBE[@]}" --deterministic --name p-det-refused

# ------------------------------------------------------------------ 6. harness vs bare loop vs Ray
# The full 45k-image training split (CIFAR-10 less its 5k validation), 3 epochs: the first is warm-up.
MODES=bare,inprocess
(( HAVE_RAY )) && MODES=bare,inprocess,ray
gpu_step bench-overhead 90 40 $H bench overhead --arch resnet20 --batch-size 512 --epochs 3 --n-train 45000 \
    --modes "$MODES" --out "$TP_CSV"

# ------------------------------------------------------------------ 7. GPU sanity + bare GPU loop
gpu_step gpu-sanity 60 20 "$PY" "$WORK/sanity.py"

# ------------------------------------------------------------------ 8. training on the GPU (in process)
gpu_step run-r9-auto 90 40 $H run "${COMMON[@]}" --epochs 3 --loader auto --augment base --name r9-auto
# Same run without augmentation: the tensor backend then makes no per-batch host->device copies,
# so the img/s difference is what the per-batch syncs (augment.py _dev) cost.
gpu_step run-r9-noaug 60 30 $H run "${COMMON[@]}" --epochs 3 --loader tensor --augment none --name r9-noaug \
    --set train.measure_inference=false

# ------------------------------------------------------------------ 9. where the GPU path syncs
gpu_step sync-probe 60 20 "$PY" "$WORK/sync_probe.py" "$WORK"

# ------------------------------------------------------------------ 10. loader throughput
gpu_step bench-loaders 90 40 $H bench loaders --data-dir "$DATA_DIR" --presets none,base,strong --epochs 2 \
    --batch-size 512 --workers 12 --limit 25000 --out "$TP_CSV"

# ------------------------------------------------------------------ 11. Ray Train, one GPU worker
# (`harness run` shuts its private local Ray down itself; nothing here kills processes by name.)
if (( HAVE_RAY )); then
    gpu_step ray-r9-w1 120 60 $H run "${COMMON[@]}" --epochs 2 --loader tensor --augment base --workers 1 \
        --set dist.use_gpu=true --name r9-ray --set train.measure_inference=false
else
    skip ray-r9-w1 120 "ray not importable on this machine (carry ray wheels in .whl to run it)"
fi

# ------------------------------------------------------------------ wrap up (at most WRAPUP_MAX s)
[[ -n $SMI_PID ]] && kill "$SMI_PID" 2>/dev/null
(( DRY )) || timeout 5 nvidia-smi --query-gpu=memory.used,clocks.sm,temperature.gpu --format=csv >>"$OUT/env.txt" 2>&1
[[ -f $TP_CSV ]] && cp "$TP_CSV" "$OUT/throughput.csv"
cp "$TSV" "$LOGS/" 2>/dev/null
KEEP=(logs)
for d in runs runs-probe results; do [[ -d $WORK/$d ]] && KEEP+=("$d"); done
timeout 15 tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.pt.tmp' --exclude='tb' \
    --exclude='pids' --exclude='*.beton' "${KEEP[@]}" 2>/dev/null
# Keep the archive under the 16 MiB the tool brings back: fall back to the logs alone.
if [[ $(stat -c %s "$OUT/gpu-check-logs.tar.gz" 2>/dev/null || echo 0) -gt 15000000 || ! -s $OUT/gpu-check-logs.tar.gz ]]; then
    timeout 10 tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$WORK" logs
fi
ls -la "$OUT"

# The benches' own tables, for the summary.
bench_tables() {
    if [[ -f $LOGS/bench-speed94.log ]]; then
        echo; echo "bench speed (time to 94% val):"; sed -n '/^recipe /,/^rows appended/p' "$LOGS/bench-speed94.log"
        grep '^peer:' "$LOGS/bench-speed94.log"
    fi
    if [[ -f $LOGS/bench-overhead.log ]]; then
        echo; echo "bench overhead:"
        sed -n '/^mode /,/^rows appended/p' "$LOGS/bench-overhead.log"
    fi
    if [[ -f $LOGS/bench-loaders.log ]]; then
        echo; echo "bench loaders:"; sed -n '/^backend /,/^rows appended/p' "$LOGS/bench-loaders.log"
    fi
    if [[ -f $LOGS/sync-probe.log ]]; then
        echo; sed -n '/^train loop:/,$p' "$LOGS/sync-probe.log" | grep -v '^METRIC'
    fi
}

# The step table goes last, so it is what a cut-off output_tail keeps.
{
    echo "cnn-harness GPU check: dataset $DSNAME, $(( $(date +%s) - T0 ))s of a ${BUDGET}s budget" \
         "(worst case $(( BUDGET + KILL_GRACE + WRAPUP_MAX ))s)$( (( DRY )) && echo ', DRY RUN: nothing ran')"
    (( DRY )) || bench_tables
    echo
    awk -F'\t' 'NR==1 {printf "%-18s %-11s %5s %4s  %s\n", "step", "status", "secs", "cap", "note"; next}
                {printf "%-18s %-11s %5s %4s  %s\n", $1, $2, $3, $4, $7}' "$TSV"
} >"$OUT/summary.txt"
rm -rf "$WORK"
cat "$OUT/summary.txt"
exit 0
