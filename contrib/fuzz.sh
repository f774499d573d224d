#!/usr/bin/env bash
# Runs every cargo-fuzz target (the adapters' parsers, the proxy's request routing and its config
# parser) for SECONDS each (default 20), starting from the seeds in adapters/fuzz/seeds. Installs what it needs if missing: a C++ compiler (for
# libFuzzer, via apt-get) and cargo-fuzz (via cargo install). `contrib/fuzz.sh --prepare` only
# installs them.
#
# Fails when a target crashes (its input is left in adapters/fuzz/artifacts/), when the crate's
# targets are not exactly the expected ones below, or when a target executed no input: a run
# that fuzzed nothing must not pass as a run that found nothing.
set -euo pipefail
cd "$(dirname "$0")/../adapters/fuzz"

# One per parser (the proxy's request routing and config too); a target added to the crate is added here too.
expected=(config packages primary release repomd route sources)

if ! command -v c++ >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "fuzz: installing g++ (libFuzzer is C++)" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends g++
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if [ "${1:-}" = "--prepare" ]; then
  exit 0
fi
secs=${1:-20}

# cargo-fuzz passes nightly-only flags (sanitizers); this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
listed=$(cargo fuzz list | sort | xargs)
want=$(printf '%s\n' "${expected[@]}" | sort | xargs)
if [ "$listed" != "$want" ]; then
  echo "fuzz: the crate's targets are [$listed]; expected [$want]" >&2
  exit 1
fi
for target in "${expected[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${secs}s"
  log="$(mktemp)"
  if ! cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target failed; the input is in adapters/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' "$log" || true
  units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if ! [ "${units:-0}" -gt 0 ] 2>/dev/null; then
    tail -n 30 "$log"
    echo "fuzz: $target executed no input" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "fuzz: all ${#expected[@]} targets ran and executed inputs"
