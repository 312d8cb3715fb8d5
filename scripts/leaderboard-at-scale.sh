#!/usr/bin/env bash
# Issue 25 item 4: time `harness leaderboard` (CSV merge and the generated page) on a leaderboard of N rows.
# The rows are the repo's own results/leaderboard.csv rows repeated with distinct config_ids, lrs and
# accuracies, in a temporary results folder: the repo's results/ and docs/ are not touched.
# Usage: scripts/leaderboard-at-scale.sh [N]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
PY=${PYTHON:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/results"
"$PY" - "$N" "$TMP/results/leaderboard.csv" <<'EOF'
import csv, hashlib, sys
n, out = int(sys.argv[1]), sys.argv[2]
with open("results/leaderboard.csv", newline="") as f:
    rows = list(csv.DictReader(f))
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    for i in range(n):
        r = dict(rows[i % len(rows)])
        r["config_id"] = hashlib.sha1(str(i).encode()).hexdigest()[:10]
        r["lr"] = f"{0.0001 * (1 + i % 997):g}"
        if r["test_acc_mean"]:
            r["test_acc_mean"] = f"{0.1 + 0.8 * ((i * 7919) % n) / n:.4f}"
            r["val_acc_mean"] = f"{0.1 + 0.8 * ((i * 7919) % n) / n:.4f}"
        w.writerow(r)
EOF
echo "leaderboard-at-scale: $N rows; CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
start=$(date +%s.%N)
"$PY" -m harness leaderboard --results-dir "$TMP/results" --docs-dir "$TMP/docs" | tail -3
end=$(date +%s.%N)
printf 'leaderboard-at-scale: %s rows in %.1f s (page %s KB)\n' "$N" "$(echo "$end - $start" | bc)" \
  "$(( $(stat -c %s "$TMP/docs/leaderboard.md") / 1024 ))"
