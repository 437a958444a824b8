#!/usr/bin/env bash
# Runs every bench/*.py with --quick, one at a time (benches on shared cores slow each other), and
# checks that each exits 0 with a JSON object as its last line of stdout. Prints each script's
# time and JSON line; exits 1 naming every script that failed, after trying them all.
#
#     bash bench/run_quick.sh            (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
# one OpenMP thread: on cores that other jobs share, torch's spinning threads made a quick run
# several times slower (bench/tts.py: 10 s with one thread, 30 s with two); the figures of a
# quick run mean nothing anyway
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stderr=$(mktemp)
trap 'rm -f "$stderr"' EXIT

failed=()
started=$SECONDS
for script in bench/*.py; do
    start=$SECONDS
    stdout=$("$python" "$script" --quick 2>"$stderr")
    status=$?
    last=$(printf '%s\n' "$stdout" | tail -n 1)
    took=$((SECONDS - start))
    if [ "$status" -ne 0 ]; then
        problem="exit status $status"
    elif ! printf '%s' "$last" | "$python" -c 'import json, sys; assert isinstance(json.load(sys.stdin), dict)' 2>/dev/null; then
        problem="last line of stdout is not a JSON object: ${last:0:200}"
    else
        echo "$script (${took}s): $last"
        continue
    fi
    echo "FAILED $script (${took}s): $problem" >&2
    tail -n 20 "$stderr" >&2
    failed+=("$script")
done

echo "bench quick run: $((SECONDS - started))s" >&2
if [ "${#failed[@]}" -gt 0 ]; then
    echo "bench quick run failed: ${failed[*]}" >&2
    exit 1
fi
