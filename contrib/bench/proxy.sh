#!/usr/bin/env bash
# Benchmarks the proxy on loopback: cache-hit throughput with wrk (64 connections, a small and a
# large file), then peak RSS while 200 clients download one cold file at once.
# Needs wrk and curl (apt-get install wrk curl). Prints numbers; changes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q
bin=$PWD/target/release/vzpkg
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/up/debian/pool"
head -c 4096 /dev/urandom >"$work/up/debian/pool/small_1_all.deb"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$work/up/debian/pool/large_1_all.deb"
head -c $((128 * 1024 * 1024)) /dev/urandom >"$work/up/debian/pool/cold_1_all.deb"
(cd "$work/up" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/up.log" 2>&1) &
for _ in $(seq 100); do grep -q "port" "$work/up.log" 2>/dev/null && break; sleep 0.1; done
up_port=$(grep -o 'port [0-9]*' "$work/up.log" | head -1 | cut -d' ' -f2)

echo "" >"$work/empty.toml"
RUST_LOG=warn "$bin" --config "$work/empty.toml" --cache-dir "$work/cache" proxy --listen 127.0.0.1:0 \
  --remap "debian=http://127.0.0.1:$up_port/debian" >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^vzpkg proxy listening on //p' "$work/proxy.out")
base="http://$addr/debian/pool"

curl -sf -o /dev/null "$base/small_1_all.deb"
curl -sf -o /dev/null "$base/large_1_all.deb"
echo "== cache hits, 64 connections, 10 s each (wrk, 2 threads) =="
for f in small_1_all.deb large_1_all.deb; do
  echo "-- $f"
  wrk -t2 -c64 -d10s "$base/$f" | grep -E 'Requests/sec|Transfer/sec|Latency'
done

echo "== 200 clients downloading one cold 128 MiB file at once =="
seq 200 | sed "s|.*|url = \"$base/cold_1_all.deb\"\noutput = \"/dev/null\"|" >"$work/curl.cfg"
start=$(date +%s.%N)
curl -s --parallel --parallel-immediate --parallel-max 200 -K "$work/curl.cfg" >/dev/null 2>&1
end=$(date +%s.%N)
echo "wall: $(echo "$end - $start" | bc) s for 200 x 128 MiB"
grep -E 'VmHWM|VmRSS' "/proc/$proxy_pid/status"
curl -s "http://$addr/_vzpkg/metrics" | grep -E '^vzpkg_(cache_misses|joined_downloads|bytes_from_upstream)_total'
