#!/usr/bin/env bash
# Runs each libFuzzer target for N seconds from its seed corpus (tests/fuzz/corpus/NAME,
# copied so the committed seeds are never modified). Crashes leave their input in build/fuzz/crashes.
# FUZZ_SEED fixes libFuzzer's random seed (unset: a new one each run).
set -u
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
secs=$1; shift
mkdir -p build/fuzz/crashes build/fuzz/work
pass=0 fail=0
for t in "$@"; do
  name=$(basename "$t")
  work=build/fuzz/work/$name
  mkdir -p "$work"
  [ -d "tests/fuzz/corpus/$name" ] && cp -n tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null
  echo "fuzz: $name for ${secs}s"
  if "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
       -artifact_prefix=build/fuzz/crashes/"$name"- "${seed[@]}" "$work" > "build/fuzz/$name.log" 2>&1; then
    pass=$((pass + 1)); tail -n 1 "build/fuzz/$name.log"
  else
    fail=$((fail + 1)); echo "FAILED: $name"; tail -n 40 "build/fuzz/$name.log"
  fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
