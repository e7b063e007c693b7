#!/usr/bin/env bash
# Runs every C unit-test binary (cmocka) and prints one closing summary line.
set -u
pass=0 fail=0
for t in "$@"; do
  if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAILED: $t"; fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
