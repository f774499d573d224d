#!/usr/bin/env bash
# Benchmarks the wrapper on loopback (as root): `vzpkg install` of an already-installed package
# against plain `chroot ROOT apt-get install` (hyperfine), then ten containers installing the
# same set of packages through vzpkg with a warm cache against ten running apt-get in a chroot
# straight from the upstream. Needs hyperfine, dpkg-dev, apt-utils and the test root tarball
# that contrib/test.sh makes. Prints numbers; works in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "wrapper.sh: run as root" >&2; exit 1; }
rootfs=${VZPKG_TEST_ROOTFS:-/var/cache/vzpkg-tests/debian-apt.tar}
cargo build --release --locked -q
bin=$PWD/target/release/vzpkg
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A repository of 20 packages of 1 MiB each.
repo=$work/up/debian
mkdir -p "$repo/pool/main" "$repo/dists/stable/main/binary-amd64"
pkgs=()
for i in $(seq -w 1 20); do
  d=$work/build/bench$i
  mkdir -p "$d/DEBIAN" "$d/usr/share/bench$i"
  printf 'Package: bench%s\nVersion: 1.0\nArchitecture: all\nMaintainer: bench <bench@example.org>\nDescription: bench\n' "$i" >"$d/DEBIAN/control"
  head -c 1048576 /dev/urandom >"$d/usr/share/bench$i/data"
  dpkg-deb -Znone --root-owner-group --build "$d" "$repo/pool/main/bench${i}_1.0_all.deb" >/dev/null
  pkgs+=("bench$i")
done
(cd "$repo" && apt-ftparchive packages pool >dists/stable/main/binary-amd64/Packages)
(cd "$repo/dists/stable" && apt-ftparchive -o APT::FTPArchive::Release::Suite=stable release . >Release.tmp && mv Release.tmp Release)
(cd "$work/up" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/up.log" 2>&1) &
for _ in $(seq 100); do grep -q port "$work/up.log" 2>/dev/null && break; sleep 0.1; done
up=127.0.0.1:$(grep -o 'port [0-9]*' "$work/up.log" | head -1 | cut -d' ' -f2)

: >"$work/vzpkg.toml"
RUST_LOG=warn "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" proxy --listen 127.0.0.1:0 --allow-host "$up" \
  >"$work/proxy.out" 2>"$work/proxy.err" &
for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
proxy=http://$(sed -n 's/^vzpkg proxy listening on //p' "$work/proxy.out")
vz() { "$bin" --config "$work/vzpkg.toml" --cache-dir "$work/cache" --state-dir "$work/state" "$@"; }

new_root() {
  mkdir -p "$1" && tar -C "$1" -xf "$rootfs"
  rm -f "$1"/etc/apt/sources.list.d/*
  echo "deb [trusted=yes] http://$up/debian stable main" >"$1/etc/apt/sources.list"
}

echo "== install of an already-installed package"
new_root "$work/ct0"
vz update -y --proxy "$proxy" "dir:$work/ct0" >/dev/null 2>&1
vz install -y --proxy "$proxy" "dir:$work/ct0" bench01 >/dev/null 2>&1
hyperfine --warmup 2 --runs 20 --style basic \
  "$bin --config $work/vzpkg.toml --cache-dir $work/cache --state-dir $work/state install -y --proxy $proxy dir:$work/ct0 bench01" \
  "chroot $work/ct0 apt-get install -y -q bench01"

echo "== ten containers installing ${#pkgs[@]} packages (20 MiB)"
for i in $(seq 1 10); do
  new_root "$work/vz$i"; vz update -y --proxy "$proxy" "dir:$work/vz$i" >/dev/null 2>&1
  new_root "$work/ap$i"; chroot "$work/ap$i" apt-get update -q >/dev/null 2>&1
done
vz install -y --proxy "$proxy" "dir:$work/vz1" "${pkgs[@]}" >/dev/null 2>&1 # warms the cache
start=$(date +%s.%N)
for i in $(seq 2 10); do vz install -y --proxy "$proxy" "dir:$work/vz$i" "${pkgs[@]}" >/dev/null 2>&1; done
end=$(date +%s.%N)
echo "vzpkg, warm cache: $(echo "($end - $start) / 9" | bc -l | cut -c1-5) s per container"
start=$(date +%s.%N)
for i in $(seq 2 10); do chroot "$work/ap$i" apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; done
end=$(date +%s.%N)
echo "chroot apt-get from upstream: $(echo "($end - $start) / 9" | bc -l | cut -c1-5) s per container"
curl -s "$proxy/_vzpkg/metrics" | grep -E '^vzpkg_(cache_hits|cache_misses|bytes_from_upstream)_total'
