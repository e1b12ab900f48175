#!/bin/sh
# The overload demo's acceptance runs: `brace-demo overload --factor 5 --seconds 30 --noise`
# N times in a row (default 5), each run's whole output (progress lines and report) and
# plot stored in DIR (default benchmarks/results) as demo-overload-noise-<i>.txt / .png,
# then a table of every run's figures with their medians and ranges
# (`brace-demo summarize`), also stored as demo-overload-noise-summary.txt.
#
#   benchmarks/demo_noise_runs.sh [N] [DIR]
#
# BRACE_DEMO names the command (default: brace-demo, else .venv/bin/brace-demo).
# Each run takes about two and a half minutes. Exit status: 0 when every run met every target.
set -eu
n=${1:-5}
dir=${2:-benchmarks/results}
demo=${BRACE_DEMO:-}
if [ -z "$demo" ]; then
    if command -v brace-demo >/dev/null 2>&1; then demo=brace-demo; else demo=.venv/bin/brace-demo; fi
fi
mkdir -p "$dir"
failed=0
i=1
while [ "$i" -le "$n" ]; do
    out="$dir/demo-overload-noise-$i.txt"
    echo "run $i of $n -> $out"
    if ! "$demo" overload --factor 5 --seconds 30 --noise --plot "$dir/demo-overload-noise-$i.png" \
        >"$out" 2>&1; then
        echo "run $i: brace-demo exited with an error" | tee -a "$out"
        failed=1
    fi
    if grep -q '\[FAIL\]' "$out"; then failed=1; fi
    grep -E '^  \[(PASS|FAIL)\]' "$out" || true
    i=$((i + 1))
done
files=""
i=1
while [ "$i" -le "$n" ]; do files="$files $dir/demo-overload-noise-$i.txt"; i=$((i + 1)); done
# shellcheck disable=SC2086
"$demo" summarize $files | tee "$dir/demo-overload-noise-summary.txt"
exit "$failed"
