#!/usr/bin/env bash
# Benchmarks a run over many containers (as root): ten Debian roots (the tarball contrib/test.sh
# makes, with the mirror mmdebstrap gave it) each getting the same packages, first with plain
# `apt-get update && apt-get install` in each, one after another, straight from upstream; then
# with `vzpkg update` + `vzpkg install --parallel N` through a proxy whose cache one earlier
# container warmed. Prints wall times and bytes from upstream. Usage:
#   contrib/bench/fleet.sh [PARALLEL…]        (default: 4; e.g. `fleet.sh 2 4 8`)
# PACKAGES overrides the set (default: git).
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

: >"$work/vzpkg.toml"
RUST_LOG=warn "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" proxy --listen 127.0.0.1:0 \
  >"$work/proxy.out" 2>"$work/proxy.err" &
for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
proxy=http://$(sed -n 's/^vzpkg proxy listening on //p' "$work/proxy.out")
vz() { "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" --state-dir "$work/state" "$@"; }
upstream_bytes() { curl -s "$proxy/_vzpkg/metrics" | awk '/^vzpkg_bytes_from_upstream_total/ {print $2}'; }
new_root() { mkdir -p "$1" && tar -C "$1" -xf "$rootfs" && cp /etc/resolv.conf "$1/etc/resolv.conf"; }
now() { date +%s.%N; }

echo "== ten containers, ${packages[*]}, $(nproc) CPUs"
list() { local p=$1 out=(); for i in $(seq 1 10); do out+=("dir:$work/$p$i"); done; (IFS=,; echo "${out[*]}"); }

for i in $(seq 1 10); do new_root "$work/plain$i"; done
fetched=0
start=$(now)
for i in $(seq 1 10); do
  log=$work/plain$i.log
  chroot "$work/plain$i" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${packages[*]}" >"$log" 2>&1
  bytes=$(awk '/^Fetched/ {v=$2; u=$3; m=(u=="kB")?1e3:(u=="MB")?1e6:(u=="GB")?1e9:1; s+=v*m} END {printf "%d", s}' "$log")
  fetched=$((fetched + bytes))
done
plain=$(echo "$(now) - $start" | bc -l)
printf 'plain apt-get, serial, from upstream: %.1f s wall, %d MB from upstream\n' "$plain" $((fetched / 1000000))

new_root "$work/warm"
vz update -y --proxy "$proxy" "dir:$work/warm" >/dev/null 2>&1
vz install -y --proxy "$proxy" "dir:$work/warm" "${packages[@]}" >/dev/null 2>&1
for n in "${parallels[@]}"; do
  rm -rf "$work"/vz*; for i in $(seq 1 10); do new_root "$work/vz$i"; done
  before=$(upstream_bytes)
  start=$(now)
  vz update -y --proxy "$proxy" --parallel "$n" --quiet "$(list vz)" >/dev/null
  vz install -y --proxy "$proxy" --parallel "$n" --quiet "$(list vz)" "${packages[@]}" >"$work/summary.txt"
  took=$(echo "$(now) - $start" | bc -l)
  grep -q '10 ok' "$work/summary.txt" || { cat "$work/summary.txt"; exit 1; }
  after=$(upstream_bytes)
  printf 'vzpkg update + install --parallel %d, warm cache: %.1f s wall (%.2f× plain), %d MB from upstream\n' \
    "$n" "$took" "$(echo "$took / $plain" | bc -l)" $(((${after%.*} - ${before%.*}) / 1000000))
done
