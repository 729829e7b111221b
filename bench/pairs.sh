#!/usr/bin/env bash
# Alternating `single` runs of several router builds (or of one build with other harness flags), for comparing
# them on a shared machine: each round runs every spec once, in the given order on odd rounds and reversed on even
# ones, so a drift in the machine's speed falls on all of them alike. Compare the rounds pair by pair.
#
#   bench/pairs.sh ROUNDS LABEL:BINARY[:HARNESS FLAGS] ...
#   bench/pairs.sh 8 new:/tmp/sw-new schema:/tmp/sw-new:--event-schema old:/tmp/sw-old
#
# Needs target/release/switchyard-bench (cargo build --release -p switchyard-bench). Prints one line per run:
# round, label, deliveries/s, router CPU per 1,000 deliveries and deliver/baseline. EVENTS (default 60000) sets
# the events per run.
set -euo pipefail
rounds=$1
shift
bench=$(dirname "$0")/../target/release/switchyard-bench
for round in $(seq 1 "$rounds"); do
  specs=("$@")
  if ((round % 2 == 0)); then mapfile -t specs < <(printf '%s\n' "$@" | tac); fi
  for spec in "${specs[@]}"; do
    IFS=: read -r label binary flags <<<"$spec"
    # shellcheck disable=SC2086 # the flags are words
    result=$("$bench" single --disk-baseline-secs 0 --events "${EVENTS:-60000}" --switchyard-bin "$binary" $flags 2>&1)
    deliver=$(grep -E '^  deliver  ' <<<"$result" | awk '{print $2}')
    cpu=$(grep -E '^  router cpu' <<<"$result" | awk '{print $3}')
    ratio=$(grep -E '^  deliver/baseline' <<<"$result" | awk '{print $2}')
    echo "$round $label deliver=$deliver router_cpu=$cpu deliver/baseline=$ratio"
  done
done
