#!/usr/bin/env bash
# gpu-reproduce.sh: the report rows too large for a CPU (the GPU queue), run on one lent GPU within one
# device call, cheapest first by their stated GPU time, n = 1, bf16 and channels_last, --compile where a
# row is long enough to pay its compile time back.
#
# Run it from the project root on the device machine (the device tool's command, timeout_s 600):
#     bash scripts/gpu-reproduce.sh
# It writes the queue's run configs (`harness reproduce --all --gpu-queue`), then `harness run`s each one
# that still fits the budget (the machine has no Ray: every row trains in process). What comes back in
# $OUT: summary.tsv (row, status, seconds, val and test accuracy), runs/ (each run's summary.json,
# metrics.csv and config.yaml; checkpoints are deleted to stay small) and the logs.
#
# Data: $HARNESS_DATA_DIR with cifar10/cifar10.npz (staged in chunks, ../shared/device/README.md). Without
# it the rows train on synthetic CIFAR-shaped images: throughput only, and summary.tsv says so.
# DRY_RUN=1 (what `make test` runs, on the CPU): the same queue and commands with tiny caps (2 steps of
# batch 8 on 256 synthetic images, fp32), so the script and every queued config are proved without a GPU.
# Budget: GPU_REPRODUCE_BUDGET_S (default 500 s, inside the device tool's 600 s per call).
# GPU_REPRODUCE_MAX_ROWS=N: train the N cheapest rows only (the rest are listed as skipped); default all.

set -u -o pipefail

ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-reproduce-out}
BUDGET=${GPU_REPRODUCE_BUDGET_S:-500}
DRY=${DRY_RUN:-0}
MAX_ROWS=${GPU_REPRODUCE_MAX_ROWS:-0}
PY=${PYTHON:-python3}
T0=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT/queue" "$OUT/runs" "$OUT/logs"
SUMMARY=$OUT/summary.tsv

"$PY" -m harness reproduce --all --gpu-queue "$OUT/queue" --results-dir "$ROOT/results" >"$OUT/logs/queue.log" 2>&1 \
    || { echo "gpu-reproduce: could not write the queue:"; tail -5 "$OUT/logs/queue.log"; exit 1; }

DATA=${HARNESS_DATA_DIR:-/tmp/stage}
if [ "$DRY" = 1 ]; then
    ARGS=(--set data.dataset=synthetic --set data.synthetic_size=256 --set train.epochs=1 --set train.max_steps=2
          --set train.batch_size=8 --set train.eval_batch_size=16 --set train.precision=fp32
          --set train.measure_inference=false)
    DATA_NOTE="dry run: 2 steps on synthetic images, CPU"
elif [ -f "$DATA/cifar10/cifar10.npz" ]; then
    ARGS=(--data-dir "$DATA" --set train.precision=bf16 --set train.channels_last=true)
    DATA_NOTE="real CIFAR-10 from $DATA"
else
    ARGS=(--set data.dataset=synthetic --set data.synthetic_size=50000 --set train.precision=bf16
          --set train.channels_last=true)
    DATA_NOTE="synthetic CIFAR-shaped images (no CIFAR-10 staged): throughput only, accuracies meaningless"
fi

printf 'config\treport\trows\tstatus\tseconds\tstated_gpu_s\tval_acc\ttest_acc\n' >"$SUMMARY"
n=0
tail -n +2 "$OUT/queue/queue.tsv" | while IFS=$'\t' read -r file report rows gpu_s; do
    n=$((n + 1))
    if [ "$MAX_ROWS" -gt 0 ] && [ "$n" -gt "$MAX_ROWS" ]; then
        printf '%s\t%s\t%s\tSKIP (GPU_REPRODUCE_MAX_ROWS=%s)\t0\t%s\t\t\n' "$file" "$report" "$rows" "$MAX_ROWS" \
            "$gpu_s" >>"$SUMMARY"
        continue
    fi
    left=$((BUDGET - ($(date +%s) - T0)))
    need=$(( DRY == 1 ? 5 : ${gpu_s:-60} + 30 ))  # the stated time plus start-up
    if [ "$left" -lt "$need" ]; then
        printf '%s\t%s\t%s\tSKIP (needs ~%s s, %s s left)\t0\t%s\t\t\n' "$file" "$report" "$rows" "$need" "$left" \
            "$gpu_s" >>"$SUMMARY"
        continue
    fi
    extra=()
    # --compile pays back its ~1 min of compile on the long rows only (its static shapes drop the last batch).
    if [ "$DRY" != 1 ] && [ "${gpu_s:-0}" -gt 300 ]; then extra=(--compile); fi
    name=${file%.yaml}
    t=$(date +%s)
    timeout "$left" "$PY" -m harness run --config "$OUT/queue/$file" "${ARGS[@]}" "${extra[@]}" \
        --set "out=$OUT/runs/$name" --no-progress >"$OUT/logs/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t ))
    status=$([ $rc = 0 ] && echo ok || { [ $rc = 124 ] && echo "TIMEOUT" || echo "FAIL rc=$rc"; })
    summary=$(ls "$OUT"/runs/"$name"/*/summary.json 2>/dev/null | head -1)
    accs=$("$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s.get('val_acc') or ''}\t{s.get('test_acc') or ''}\")" \
        "$summary" 2>/dev/null || printf '\t')
    find "$OUT/runs/$name" -name '*.pt' -delete 2>/dev/null  # what comes back is capped in size
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$file" "$report" "$rows" "$status" "$secs" "$gpu_s" "$accs" >>"$SUMMARY"
done

echo "gpu-reproduce: $DATA_NOTE; $(( $(date +%s) - T0 )) s of a $BUDGET s budget"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
