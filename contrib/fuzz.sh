#!/usr/bin/env bash
# Runs every cargo-fuzz target of the adapters' parsers for SECONDS each (default 20), starting
# from the seeds in adapters/fuzz/seeds. Installs cargo-fuzz if missing. A crash fails the run
# and leaves its input in adapters/fuzz/artifacts/.
set -euo pipefail
secs=${1:-20}
cd "$(dirname "$0")/../adapters/fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly-only flags (sanitizers); this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${secs}s"
  log="$(mktemp)"
  if ! cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target failed; the input is in adapters/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' "$log"
  rm -f "$log"
done
