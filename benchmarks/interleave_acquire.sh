#!/usr/bin/env bash
# Time bench_acquire.py for two checkouts of jacal, alternating them round by round, so that a machine
# whose speed drifts affects both alike. The library comes from each checkout (PYTHONPATH, run from a
# neutral folder); the benchmark script is always this checkout's.
#
#   git worktree add /tmp/jacal-old <revision>
#   benchmarks/interleave_acquire.sh /tmp/jacal-old "jacobian,coreset" 3 runs/interleave
#
# Writes OUT/<old|new>-<round>.json (bench_acquire's JSON) and prints one line per run.
set -euo pipefail
old=$(cd "$1" && pwd); strategies=$2; rounds=$3; out=$(mkdir -p "$4" && cd "$4" && pwd)
new=$(cd "$(dirname "$0")/.." && pwd)
shift 4
for r in $(seq 1 "$rounds"); do
  for v in old new; do
    lib=$new; [ "$v" = old ] && lib=$old
    (cd /tmp && PYTHONPATH="$lib" python "$new/benchmarks/bench_acquire.py" --pool-size 60000 --k 1000 \
      --batch-size 256 --device cpu --strategies "$strategies" "$@" > "$out/$v-$r.json" 2> "$out/$v-$r.err")
    echo "$v round $r: $(grep -h '"seconds"' "$out/$v-$r.json" | tr -d ' ,"' | tr '\n' ' ')"
  done
done
