#!/usr/bin/env bash
# Runs the GPU test binaries (make test-gpu). Each one prints a SKIPPED line and exits
# 77 when no GPU is visible; that counts as skipped, not failed, so `make test` passes
# on machines without a GPU and the summary says what did not run.
set -u
pass=0 fail=0 skip=0
for t in "$@"; do
  "$t"
  rc=$?
  if [ "$rc" -eq 0 ]; then pass=$((pass + 1))
  elif [ "$rc" -eq 77 ]; then skip=$((skip + 1))
  else fail=$((fail + 1)); echo "FAILED: $t"; fi
done
echo "gpu: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
