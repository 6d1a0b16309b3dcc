#!/usr/bin/env bash
# Same-session A/B of two checkouts (each with its own .venv), alternating, so that both
# sides see the same machine: one benchmarks run per side per round, under the bench lock.
#   benchmarks/ab_commits.sh OLD_DIR NEW_DIR ROUNDS OUT_DIR -- BENCHMARK ARGS...
# e.g. benchmarks/ab_commits.sh /tmp/old . 2 /tmp/ab -- iteration --family nav --net port \
#        --iterations 5 --variants naive chunked+malloc fast-autograd fast fast+fisher20%
set -euo pipefail
[ $# -ge 6 ] && [ "$5" = "--" ] || { echo "usage: $0 OLD_DIR NEW_DIR ROUNDS OUT_DIR -- ARGS..." >&2; exit 2; }
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); rounds=$3; out=$4; shift 5
mkdir -p "$out"
for round in $(seq "$rounds"); do
  for side in old new; do
    dir=$old; [ "$side" = new ] && dir=$new
    echo "== round $round $side $(git -C "$dir" rev-parse --short HEAD) $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$dir" && flock /tmp/meta-rl-bench.lock .venv/bin/python -m benchmarks --out "$out/$side$round" "$@" 2>&1 | grep -v "it/s")
  done
done
