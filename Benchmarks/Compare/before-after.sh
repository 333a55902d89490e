#!/bin/bash
# Runs the broker benchmarks back to back on two release builds of tocsin, alternated, so a
# change is compared on the same machine in the same minutes (docs/performance.md).
#   Benchmarks/Compare/before-after.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
# Build each with `swift build -c release --product tocsin` and copy .build/release/tocsin away.
set -u
B=${1:?before binary}; A=${2:?after binary}; rounds=${3:-3}
cd "${TMPDIR:-/tmp}"
run() { echo "### $1"; shift; bin=$1; shift; "$bin" bench "$@" 2>&1 | grep -v '^\s*$' | grep -v '^spawned\|stolen' | tail -12; }
for _ in $(seq "$rounds"); do
  run before "$B" latency --spawn --subscribers 100 --rate 500 --duration 10
  run after  "$A" latency --spawn --subscribers 100 --rate 500 --duration 10
done
for _ in $(seq "$rounds"); do
  run before "$B" latency --spawn --subscribers 1000 --rate 50 --duration 10
  run after  "$A" latency --spawn --subscribers 1000 --rate 50 --duration 10
done
run before "$B" latency --spawn --subscribers 50 --rate 4000 --duration 10
run after  "$A" latency --spawn --subscribers 50 --rate 4000 --duration 10
run before "$B" throughput --spawn --publishers 16 --duration 8
run after  "$A" throughput --spawn --publishers 16 --duration 8
run before "$B" throughput --spawn --publishers 1 --in-flight 64 --duration 8
run after  "$A" throughput --spawn --publishers 1 --in-flight 64 --duration 8
run before "$B" network --brokers 3 --subscribers 3000 --rate 5 --duration 20 --kill-broker-at 8
run after  "$A" network --brokers 3 --subscribers 3000 --rate 5 --duration 20 --kill-broker-at 8
