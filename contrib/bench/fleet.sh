#!/usr/bin/env bash
# Benchmarks a run over many containers (as root): ten Debian roots (the tarball contrib/test.sh
# makes, with the mirror mmdebstrap gave it) each getting the same packages, first with plain
# `apt-get update && apt-get install` in each, one after another, straight from upstream; then
# with `vzpkg update` + `vzpkg install --parallel N` through a proxy whose cache one earlier
# container warmed. Prints wall times and bytes from upstream. Usage:
#   contrib/bench/fleet.sh [PARALLEL…]        (default: 4; e.g. `fleet.sh 2 4 8`)
# PACKAGES overrides the set (default: git); SKIP_PLAIN="TOTAL INSTALL" skips the plain run, taking
# its times (seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "fleet.sh: run as root" >&2; exit 1; }
rootfs=${VZPKG_TEST_ROOTFS:-/var/cache/vzpkg-tests/debian-apt.tar}
read -r -a packages <<<"${PACKAGES:-git}"
parallels=("${@:-4}")
cargo build --release --locked -q
bin=$PWD/target/release/vzpkg
work=$(mktemp -d /var/tmp/vzpkg-fleet.XXXXXX)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

vz() { "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" --state-dir "$work/state" "$@"; }
upstream_bytes() { curl -s "$proxy/_vzpkg/metrics" | awk '/^vzpkg_bytes_from_upstream_total/ {print $2}'; }
new_root() { mkdir -p "$1" && tar -C "$1" -xf "$rootfs" && cp /etc/resolv.conf "$1/etc/resolv.conf"; }
now() { date +%s.%N; }
# Runs a step with its output in a log, shown if it fails.
step() { local log=$work/step.log; "$@" >"$log" 2>&1 || { echo "fleet.sh: failed: $*" >&2; tail -40 "$log" >&2; exit 1; }; }

echo "== ten containers, ${packages[*]}, $(nproc) CPUs"
list() { local p=$1 out=(); for i in $(seq 1 10); do out+=("dir:$work/$p$i"); done; (IFS=,; echo "${out[*]}"); }

if [ -n "${SKIP_PLAIN:-}" ]; then read -r plain plain_install <<<"$SKIP_PLAIN"; else
for i in $(seq 1 10); do new_root "$work/plain$i"; done
fetched=0 plain=0 plain_install=0
for i in $(seq 1 10); do
  log=$work/plain$i.log
  t0=$(now)
  chroot "$work/plain$i" apt-get update -q >"$log" 2>&1
  t1=$(now)
  DEBIAN_FRONTEND=noninteractive chroot "$work/plain$i" apt-get install -y -q "${packages[@]}" >>"$log" 2>&1
  t2=$(now)
  plain=$(echo "$plain + $t2 - $t0" | bc -l)
  plain_install=$(echo "$plain_install + $t2 - $t1" | bc -l)
  bytes=$(awk '/^Fetched/ {v=$2; u=$3; m=(u=="kB")?1e3:(u=="MB")?1e6:(u=="GB")?1e9:1; s+=v*m} END {printf "%d", s}' "$log")
  fetched=$((fetched + bytes))
done
printf 'plain apt-get, serial, from upstream: update + install %.1f s wall (install alone %.1f s), %d MB from upstream\n' \
  "$plain" "$plain_install" $((fetched / 1000000))
fi

# The proxy may reach every host the roots' own apt sources name (read from them at run time).
new_root "$work/warm"
allow=()
for host in $(cat "$work"/warm/etc/apt/sources.list "$work"/warm/etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE '(URIs:|deb(-src)?( \[[^]]*\])?) +https?://[^/ ]+' | sed -E 's#.*://##' | sort -u); do
  allow+=(--allow-host "$host")
done
: >"$work/vzpkg.toml"
RUST_LOG=warn "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" proxy --listen 127.0.0.1:0 "${allow[@]}" \
  >"$work/proxy.out" 2>"$work/proxy.err" &
for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
proxy=http://$(sed -n 's/^vzpkg proxy listening on //p' "$work/proxy.out")
step vz update -y --proxy "$proxy" "dir:$work/warm"
step vz install -y --proxy "$proxy" "dir:$work/warm" "${packages[@]}"
for n in "${parallels[@]}"; do
  rm -rf "$work"/ct*; for i in $(seq 1 10); do new_root "$work/ct$i"; done
  before=$(upstream_bytes)
  t0=$(now)
  step vz update -y --proxy "$proxy" --parallel "$n" --quiet "$(list ct)"
  t1=$(now)
  step vz install -y --proxy "$proxy" --parallel "$n" --quiet "$(list ct)" "${packages[@]}"
  t2=$(now)
  grep -q '10 ok' "$work/step.log" || { cat "$work/step.log"; exit 1; }
  after=$(upstream_bytes)
  took=$(echo "$t2 - $t0" | bc -l) install=$(echo "$t2 - $t1" | bc -l)
  printf 'vzpkg --parallel %d, warm cache: update + install %.1f s wall (%.2f× plain), install alone %.1f s (%.2f× plain), %d MB from upstream\n' \
    "$n" "$took" "$(echo "$took / $plain" | bc -l)" "$install" "$(echo "$install / $plain_install" | bc -l)" \
    $(((${after%.*} - ${before%.*}) / 1000000))
done
