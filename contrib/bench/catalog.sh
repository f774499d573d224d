#!/usr/bin/env bash
# The catalog's memory and start-up as it grows: a real apt-get updates through the proxy in
# forward mode, and the proxy is measured from /proc/PID/status (VmHWM: peak; VmRSS: at rest),
# then restarted on the same cache and timed until it has served a stored file.
#
#   contrib/bench/catalog.sh [synthetic|debian|hits]...     (default: synthetic hits)
#
#   synthetic  1,000,000 generated packages in 4 suites (Packages.xz), served on 127.0.0.1
#   debian     bookworm, trixie and sid (main contrib non-free; amd64 and arm64) from the Debian
#              mirror this machine's own apt sources name (needs the network)
#   hits       cache hits of a small .deb (wrk, 64 connections, 10 s), the binaries interleaved
#              (ROUNDS=N rounds, 3 by default)
#   learning   the same while the proxy learns the synthetic repository (apt-get update at once)
#
# VZPKG=path/to/vzpkg is measured (default: a release build of this checkout); OLD=path/to/vzpkg
# is measured the same way beside it, for a before/after. Installs what it needs (wrk, xz-utils,
# apt-utils, curl, python3) when run as root. Changes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for tool in wrk:wrk xz:xz-utils apt-ftparchive:apt-utils curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get install -y -q "${need[@]}" >/dev/null
fi
if [ -z "${VZPKG:-}" ]; then
  cargo build --release --locked -q --bin vzpkg
  VZPKG=${CARGO_TARGET_DIR:-$PWD/target}/release/vzpkg
fi
modes=("$@")
((${#modes[@]})) || modes=(synthetic hits)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
bins=("new=$VZPKG")
[ -n "${OLD:-}" ] && bins+=("old=$OLD")

kib() { awk -v k="$1" '/^'"$1"':/ {print $2}' "/proc/$2/status"; }
mib() { echo "scale=1; $1 / 1024" | bc; }

# start_proxy BIN CACHE ARGS...: sets proxy_pid and proxy_addr; started_ns is when it was spawned.
start_proxy() {
  local bin=$1 cache=$2
  shift 2
  : >"$work/proxy.out"
  started_ns=$(date +%s%N)
  RUST_LOG=warn "$bin" --config "$work/empty.toml" --cache-dir "$cache" proxy --listen 127.0.0.1:0 "$@" \
    >"$work/proxy.out" 2>>"$work/proxy.err" &
  proxy_pid=$!
  until grep -q listening "$work/proxy.out" 2>/dev/null; do
    kill -0 "$proxy_pid" || { cat "$work/proxy.err"; exit 1; }
    sleep 0.005
  done
  proxy_addr=$(sed -n 's/^vzpkg proxy listening on //p' "$work/proxy.out")
}

stop_proxy() {
  kill -TERM "$proxy_pid"
  wait "$proxy_pid" || true
}

# apt_tree DIR ARCHS SOURCES: an apt-get confined to DIR, going through the proxy.
apt_tree() {
  local dir=$1 archs=$2 sources=$3
  mkdir -p "$dir"/{etc/apt/apt.conf.d,etc/apt/preferences.d,etc/apt/sources.list.d,var/lib/apt/lists/partial}
  mkdir -p "$dir"/{var/cache/apt/archives/partial,var/log/apt}
  : >"$dir/status"
  printf '%s' "$sources" >"$dir/etc/apt/sources.list"
  local first=${archs%% *} list
  list=$(for a in $archs; do printf '"%s"; ' "$a"; done)
  cat >"$dir/apt.conf" <<EOF
Dir "$dir/";
Dir::State::status "$dir/status";
Dir::Etc::Parts "$dir/etc/apt/apt.conf.d";
APT::Architecture "$first";
APT::Architectures { $list};
APT::Sandbox::User "root";
Acquire::Languages "none";
Debug::NoLocking "true";
Acquire::Check-Valid-Until "false";
Acquire::http::Proxy "http://$proxy_addr";
EOF
}

apt_update() {
  APT_CONFIG="$1/apt.conf" apt-get -q -o Acquire::http::Proxy="http://$proxy_addr" update >"$work/apt.log" 2>&1 ||
    { tail -20 "$work/apt.log"; exit 1; }
}

status_field() { curl -sf "http://$proxy_addr/_vzpkg/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# measure NAME BIN ARCHS SOURCES PROBE_URL ALLOW: one update, then one restart.
measure() {
  local name=$1 bin=$2 archs=$3 sources=$4 probe=$5 allow=$6
  local cache=$work/cache-$name
  rm -rf "$cache" "$work/apt-$name"
  start_proxy "$bin" "$cache" $allow
  apt_tree "$work/apt-$name" "$archs" "$sources"
  local t0 t1
  t0=$(date +%s%N)
  apt_update "$work/apt-$name"
  t1=$(date +%s%N)
  local peak known rest
  peak=$(kib VmHWM "$proxy_pid")
  known=$(status_field known_hashes)
  curl -sf -x "http://$proxy_addr" -o /dev/null "$probe"
  sleep 5
  rest=$(kib VmRSS "$proxy_pid")
  stop_proxy
  # The database and its write-ahead log (checkpointed into it on a clean stop).
  local db=0 main
  for f in "$cache"/index.sqlite*; do db=$((db + $(stat -c %s "$f"))); done
  main=$(stat -c %s "$cache/index.sqlite")
  # Restart: spawned until a stored file has been served through it.
  start_proxy "$bin" "$cache" $allow
  curl -sf -x "http://$proxy_addr" -o /dev/null "$probe"
  local ready_ms=$((($(date +%s%N) - started_ns) / 1000000))
  sleep 2
  local restart_rss
  restart_rss=$(kib VmRSS "$proxy_pid")
  stop_proxy
  printf '%-4s update %5.1f s | known %8d | peak %7s MiB | at rest %6s MiB | restart ready %4d ms, %6s MiB | index.sqlite %7s MiB, with WAL %7s MiB (%d B/known)\n' \
    "$name" "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$known" "$(mib "$peak")" "$(mib "$rest")" "$ready_ms" \
    "$(mib "$restart_rss")" "$(mib $((main / 1024)))" "$(mib $((db / 1024)))" $((db / (known > 0 ? known : 1)))
}

# synthetic_repo: generates the million-package repository once and serves it; sets repo, up, port.
synthetic_repo() {
  [ -n "${up:-}" ] && return
  repo=$work/repo
  python3 - "$repo" <<'EOF'
import hashlib, os, subprocess, sys
root = sys.argv[1]
suites = ["one", "two", "three", "four"]
for i, suite in enumerate(suites):
    bin_dir = f"{root}/dists/{suite}/main/binary-amd64"
    os.makedirs(bin_dir, exist_ok=True)
    with open(f"{bin_dir}/Packages", "w") as out:
        for n in range(250_000):
            version = f"{i + 1}.{n}-1"
            sha = hashlib.sha256(f"{suite} {n}".encode()).hexdigest()
            out.write(f"Package: pkg{n}\nVersion: {version}\nArchitecture: amd64\n"
                        f"Maintainer: t <t@example.org>\nInstalled-Size: 10\n"
                        f"Filename: pool/main/p/src{n // 4}/pkg{n}_{version}_amd64.deb\nSize: {1000 + n}\n"
                        f"SHA256: {sha}\nDescription: synthetic package {n}\n\n")
        if suite == suites[-1]:
            deb = b"probe\n"
            os.makedirs(f"{root}/pool/main/p/probe", exist_ok=True)
            open(f"{root}/pool/main/p/probe/probe_1_all.deb", "wb").write(deb)
            out.write(f"Package: probe\nVersion: 1\nArchitecture: all\nFilename: pool/main/p/probe/probe_1_all.deb\n"
                        f"Size: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\nDescription: probe\n\n")
    subprocess.run(["xz", "-T0", "-3", "-k", f"{bin_dir}/Packages"], check=True)
EOF
  # Release lists the uncompressed Packages too, as Debian's do (apt looks for that name);
  # only Packages.xz is served.
  for suite in one two three four; do
    (cd "$repo/dists/$suite" && apt-ftparchive -o APT::FTPArchive::Release::Suite=$suite \
      -o APT::FTPArchive::Release::Codename=$suite -o APT::FTPArchive::Release::Architectures=amd64 \
      -o APT::FTPArchive::Release::Components=main release . >"$work/Release" && mv "$work/Release" Release &&
      rm main/binary-amd64/Packages)
  done
  (cd "$repo" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/up.log" 2>&1) &
  until grep -q "port" "$work/up.log" 2>/dev/null; do sleep 0.1; done
  port=$(grep -o 'port [0-9]*' "$work/up.log" | head -1 | cut -d' ' -f2)
  up=http://127.0.0.1:$port
}

echo "" >"$work/empty.toml"
for mode in "${modes[@]}"; do
  case $mode in
  synthetic)
    echo "== synthetic: 1,000,000 packages in 4 suites, apt-get update through the proxy (forward mode) =="
    synthetic_repo
    sources=$(for s in one two three four; do echo "deb [trusted=yes] $up $s main"; done)
    for b in "${bins[@]}"; do
      measure "${b%%=*}" "${b#*=}" amd64 "$sources" "$up/pool/main/p/probe/probe_1_all.deb" "--allow-host 127.0.0.1:$port"
    done
    ;;
  debian)
    # The mirror this machine's apt sources name (deb822 or one-line form), read now.
    mirror=$(
      { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } |
        grep -E '^https?://.*/debian/?$' | head -1
    ) || true
    [ -n "$mirror" ] || { echo "no Debian mirror in this machine's apt sources" >&2; exit 1; }
    echo "== debian: bookworm trixie sid, main contrib non-free, amd64 arm64, from this machine's mirror =="
    sources=$(for s in bookworm trixie sid; do echo "deb [trusted=yes] $mirror $s main contrib non-free"; done)
    # A stored file to time the restart by: an index, fresh for index_ttl_secs (30 s by default).
    probe="${mirror%/}/dists/sid/InRelease"
    for b in "${bins[@]}"; do
      measure "${b%%=*}" "${b#*=}" "amd64 arm64" "$sources" "$probe" ""
    done
    ;;
  hits)
    echo "== cache hits of a 42 KiB .deb, 64 connections, 10 s (wrk -t2), ${ROUNDS:-3} rounds interleaved =="
    mkdir -p "$work/hits/debian/pool"
    head -c 43008 /dev/urandom >"$work/hits/debian/pool/small_1_all.deb"
    (cd "$work/hits" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/hits.log" 2>&1) &
    until grep -q "port" "$work/hits.log" 2>/dev/null; do sleep 0.1; done
    port=$(grep -o 'port [0-9]*' "$work/hits.log" | head -1 | cut -d' ' -f2)
    for round in $(seq "${ROUNDS:-3}"); do
      for b in "${bins[@]}"; do
        start_proxy "${b#*=}" "$work/hits-${b%%=*}" --remap "debian=http://127.0.0.1:$port/debian"
        url="http://$proxy_addr/debian/pool/small_1_all.deb"
        curl -sf -o /dev/null "$url"
        printf '%-4s round %d: ' "${b%%=*}" "$round"
        wrk -t2 -c64 -d10s --latency "$url" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {printf "%s req/s, p99 %s\n", r, p}'
        stop_proxy
      done
    done
    ;;
  learning)
    echo "== cache hits of a 42 KiB .deb during apt-get update of the synthetic repository (wrk -t2 -c64 -d10s) =="
    synthetic_repo
    head -c 43008 /dev/urandom >"$repo/pool/main/p/probe/small_1_all.deb"
    sources=$(for s in one two three four; do echo "deb [trusted=yes] $up $s main"; done)
    for round in 1 2; do
      for b in "${bins[@]}"; do
        rm -rf "$work/learn-${b%%=*}" "$work/apt-learn"
        start_proxy "${b#*=}" "$work/learn-${b%%=*}" --allow-host "127.0.0.1:$port" --remap "r=$up"
        url="http://$proxy_addr/r/pool/main/p/probe/small_1_all.deb"
        curl -sf -o /dev/null "$url"
        apt_tree "$work/apt-learn" amd64 "$sources"
        apt_update "$work/apt-learn" &
        apt_pid=$!
        # Once the first index is being learned.
        until grep -q Packages "$work/apt.log" 2>/dev/null; do sleep 0.05; done
        printf '%-4s round %d: ' "${b%%=*}" "$round"
        wrk -t2 -c64 -d10s --latency "$url" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {printf "%s req/s, p99 %s", r, p}'
        wait "$apt_pid"
        echo " (update done; peak $(mib "$(kib VmHWM "$proxy_pid")") MiB)"
        stop_proxy
      done
    done
    ;;
  *)
    echo "unknown mode $mode (synthetic, debian, hits, learning)" >&2
    exit 2
    ;;
  esac
done
