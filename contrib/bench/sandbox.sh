#!/usr/bin/env bash
# The cost of the sandbox itself: `vzpkg exec CT -- true` on a Debian root (the tarball
# contrib/test.sh makes), with hyperfine. Give another vzpkg binary as the argument to compare
# (say, a release build of an older commit). As root; needs hyperfine.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "sandbox.sh: run as root" >&2; exit 1; }
rootfs=${VZPKG_TEST_ROOTFS:-/var/cache/vzpkg-tests/debian-apt.tar}
cargo build --release --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ct"
tar -C "$work/ct" -xf "$rootfs"
: >"$work/vzpkg.toml"
exec_true() {
  echo "$1 --config $work/vzpkg.toml --cache-dir $work/cache --state-dir $work/state exec --proxy http://127.0.0.1:9 dir:$work/ct -- true"
}
runs=("$(exec_true "$PWD/target/release/vzpkg")")
[ $# -ge 1 ] && runs+=("$(exec_true "$(realpath "$1")")")
hyperfine -N --warmup 5 --runs 50 --style basic "${runs[@]}"
