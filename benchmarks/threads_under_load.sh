#!/usr/bin/env bash
# Learner torch threads, quiet and beside one busy process (issue 12, item 15): seconds per
# Navigation2D meta-iteration (20 tasks x 20 episodes, the port's 64x64 net, 3 after a warm-up)
# for 1 thread, one per core, and one per core with OpenMP's passive wait policy.
# Run it alone:  flock /tmp/meta-rl-bench.lock benchmarks/threads_under_load.sh
set -euo pipefail
MR=${MR:-.venv/bin/meta-rl}
CORES=$(nproc)
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null || true' EXIT
for load in quiet busy; do
    if [ "$load" = busy ]; then
        python3 -c 'while True: pass' &
        busy=$!
        sleep 5
    fi
    for setting in "1" "$CORES" "$CORES passive"; do
        read -r threads policy <<<"$setting"
        env=()
        [ "${policy:-}" = passive ] && env=(OMP_WAIT_POLICY=PASSIVE)
        before=$(cut -d' ' -f1 /proc/loadavg)
        seconds=$(env "${env[@]}" "$MR" bench --out "runs/bench/threads" iteration \
            --variants fast --threads "$threads" --iterations 3 |
            awk '$1 == "fast" {print $2}' | tail -1)
        after=$(cut -d' ' -f1 /proc/loadavg)
        echo "$load  threads=$threads ${policy:-}  s/iteration=$seconds  load=$before->$after"
    done
done
