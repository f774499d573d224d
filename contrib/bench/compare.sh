#!/usr/bin/env bash
# vzpkg side by side with its peers, on one machine in one run, over loopback: the same
# repository served by vzpkg, apt-cacher-ng (the Debian package) and nginx serving the files
# directly (the limit), and by apt-cacher-rs when its binary is given:
#
#   sudo contrib/bench/compare.sh                      # writes BENCHMARKS.md at the top
#   sudo APT_CACHER_RS=~/.cargo/bin/apt-cacher-rs contrib/bench/compare.sh [OUTPUT.md]
#
# Figures: cache hits of a ~42 KB .deb (64 connections) and of a 20 MB one (8 connections) with
# wrk, in rounds that interleave the contenders; 50 clients on one cold 20 MB file (upstream
# GETs, the last client's time against one client alone); peak RSS while 200 clients download
# one cold 20 MB file; a hit's p99 while an 8 MB Packages file is fetched (and, by vzpkg,
# learned); and ten containers (overlays of the test root filesystem) installing the same
# packages from a local repository straight from "upstream" or through each warm cache
# (bytes from upstream, wall time). The "upstream" is nginx on loopback; cold files come at
# 50 MB/s from it, as from a fast mirror.
#
# Needs root (chroot, overlay mounts) and installs its own tools with apt-get: nginx-light,
# apt-cacher-ng, wrk, curl, dpkg-dev, apt-utils. The container root is the test tarball
# (contrib/test.sh makes it; VZPKG_TEST_ROOTFS overrides where). ROUNDS (5) and SECS (6) set the
# wrk rounds and their length; SKIP_E2E=1 leaves the container figure out.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=${1:-$repo/BENCHMARKS.md}
rounds=${ROUNDS:-5}
secs=${SECS:-6}
rootfs_tar=${VZPKG_TEST_ROOTFS:-/var/cache/vzpkg-tests/debian-apt.tar}
acrs_bin=${APT_CACHER_RS:-}

[ "$(id -u)" -eq 0 ] || { echo "compare.sh: run as root (chroot and overlay mounts for the container figure)" >&2; exit 1; }
need=()
for tool in wrk:wrk nginx:nginx-light apt-cacher-ng:apt-cacher-ng curl:curl dpkg-deb:dpkg-dev apt-ftparchive:apt-utils; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "compare.sh: installing ${need[*]}" >&2
  apt-get update -q
  # The packaged services are not wanted running: each contender is started here on its own port.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  rm -f /usr/sbin/policy-rc.d
fi
[ -z "$acrs_bin" ] || [ -x "$acrs_bin" ] || { echo "compare.sh: APT_CACHER_RS=$acrs_bin is not executable" >&2; exit 1; }

echo "== building vzpkg (release)" >&2
cargo build --release --locked -q
vzpkg=${CARGO_TARGET_DIR:-$repo/target}/release/vzpkg

work=$(mktemp -d /tmp/vzpkg-compare.XXXXXX)
chmod 755 "$work" # nginx workers read the repository as www-data
pids=()
mounts=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "compare.sh: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000)) # apt-cacher-ng fails to bind ports past 32767
    ss -ltn | awk '{print $4}' | grep -q ":$port\$" || { echo "$port"; return; }
  done
}
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "compare.sh: nothing listens on port $1" >&2
  return 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
loads=()
note_load() { loads+=("$1: $(load)"); }

# ---------------------------------------------------------------- the repository ("upstream")
echo "== building the repository" >&2
up=$work/up
mkdir -p "$up/debian/pool/main/s/small" "$up/debian/pool/main/l/large" "$up/debian/pool/main/c/cold"
head -c 43008 /dev/urandom >"$up/debian/pool/main/s/small/small_1.0_all.deb"
head -c $((20 << 20)) /dev/urandom >"$up/debian/pool/main/l/large/large_1.0_all.deb"
head -c $((20 << 20)) /dev/urandom >"$work/cold.deb"
cold() { # a cold file's path: the same 20 MB under a name of its own for each use
  ln -f "$work/cold.deb" "$up/debian/pool/main/c/cold/cold-$1_1.0_all.deb"
  echo "/debian/pool/main/c/cold/cold-$1_1.0_all.deb"
}
# An 8 MB Packages file and the Release that vouches for it, one suite per use.
learn_suite() {
  local dir=$up/debian/dists/$1
  mkdir -p "$dir/main/binary-amd64"
  awk -v seed="$2" 'BEGIN {
    srand(seed)
    for (i = 0; i < 27000; i++) {
      h = ""; for (j = 0; j < 8; j++) h = h sprintf("%08x", int(rand() * 4294967295))
      printf "Package: bench-%d\nVersion: 1.%d\nArchitecture: all\nMaintainer: Bench <bench@example.org>\n", i, seed
      printf "Filename: pool/main/b/bench-%d/bench-%d_1.%d_all.deb\nSize: %d\nSHA256: %s\n", i, i, seed, 1000 + i, h
      printf "Description: benchmark package %d for the learning figure\n\n", i
    }
  }' >"$dir/main/binary-amd64/Packages"
  local size sum
  size=$(stat -c %s "$dir/main/binary-amd64/Packages")
  sum=$(sha256sum "$dir/main/binary-amd64/Packages" | cut -d' ' -f1)
  printf 'Origin: bench\nSuite: %s\nCodename: %s\nComponents: main\nArchitectures: amd64\nSHA256:\n %s %s main/binary-amd64/Packages\n' \
    "$1" "$1" "$sum" "$size" >"$dir/Release"
}

# ---------------------------------------------------------------- nginx: upstream and the limit
up_port=$(free_port)
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 8192; }
http {
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { }
  default_type application/octet-stream;
  log_format up '\$request_method \$uri \$status \$body_bytes_sent';
  server {
    listen 127.0.0.1:$up_port;
    root $up;
    access_log $work/upstream.log up;
    location /debian/pool/main/c/ { limit_rate 50m; }
  }
  server {
    listen 127.0.0.1:$nginx_port;
    root $up;
    access_log off;
  }
}
EOF
nginx -c "$work/nginx.conf"
wait_port "$up_port"
upstream=http://localhost:$up_port

# ---------------------------------------------------------------- the contenders
contenders=(vzpkg nginx apt-cacher-ng)
[ -n "$acrs_bin" ] && contenders+=(apt-cacher-rs)
caches=("${contenders[@]/nginx/}")
read -r -a caches <<<"${caches[*]}"
declare -A port pid
for c in "${contenders[@]}"; do port[$c]=$(free_port); done
port[nginx]=$nginx_port

# Starts (or restarts, with an empty cache) one caching contender.
start() {
  local c=$1 dir=$work/$1
  [ -n "${pid[$c]:-}" ] && { kill "${pid[$c]}" 2>/dev/null || true; wait "${pid[$c]}" 2>/dev/null || true; }
  rm -rf "$dir" && mkdir -p "$dir"
  case $c in
    vzpkg)
      : >"$dir/vzpkg.toml"
      "$vzpkg" --config "$dir/vzpkg.toml" --cache-dir "$dir/cache" proxy --listen "127.0.0.1:${port[$c]}" \
        --allow-host "localhost:$up_port" >"$dir/out" 2>"$dir/log" &
      ;;
    apt-cacher-ng)
      mkdir -p "$dir/cache" "$dir/log"
      apt-cacher-ng -c /etc/apt-cacher-ng ForeGround=1 Port="${port[$c]}" BindAddress=127.0.0.1 \
        CacheDir="$dir/cache" LogDir="$dir/log" PidFile="$dir/pid" SocketPath="$dir/sock" \
        AllowUserPorts="$up_port" >"$dir/out" 2>&1 &
      ;;
    apt-cacher-rs)
      cat >"$dir/conf" <<EOF
log_level = 'warn'
bind_addr = '127.0.0.1'
bind_port = ${port[$c]}
database_path = '$dir/db.sqlite'
cache_directory = '$dir/cache'
https_upgrade_mode = 'Never'
https_tunnel_enabled = false
allowed_mirrors = [ 'localhost' ]
EOF
      "$acrs_bin" -c "$dir/conf" --permit-running-daemon-as-root >"$dir/log" 2>&1 &
      ;;
  esac
  pid[$c]=$!
  pids+=("$!")
  wait_port "${port[$c]}"
}
for c in "${caches[@]}"; do start "$c"; done

# GET through a contender: the proxies in forward form, as apt's Acquire::http::Proxy asks.
fetch() { # contender path [curl options…]
  local c=$1 path=$2
  shift 2
  if [ "$c" = nginx ]; then
    curl -sf -o /dev/null "$@" "http://127.0.0.1:$nginx_port$path"
  else
    curl -sf -o /dev/null "$@" -x "http://127.0.0.1:${port[$c]}" "$upstream$path"
  fi
}
# The transfers in curl.cfg at once through a contender, each given 120 s; false if any failed,
# with how many in failed_transfers.
parallel_get() { # contender count
  local codes
  codes=$(curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$2" --max-time 120 \
    -x "http://127.0.0.1:${port[$1]}" -K "$work/curl.cfg" -w '%{http_code} %{size_download}\n' || true)
  failed_transfers=$(echo "$codes" | awk '$1 != 200 || $2 != 20971520' | wc -l)
  [ "$failed_transfers" -eq 0 ]
}
upstream_gets() { grep -c "^GET $1 " "$work/upstream.log" || true; }

# wrk against a contender; prints "req/s bytes/s p99-ms", or "error error error" when more than
# one request in a thousand failed (a timeout, a reset, a status other than 2xx).
bench() { # contender path connections seconds
  local c=$1 path=$2 conns=$3 time=$4 target base
  if [ "$c" = nginx ]; then target=$path; else target=$upstream$path; fi
  base=http://127.0.0.1:${port[$c]}
  cat >"$work/wrk.lua" <<EOF
wrk.path = "$target"
done = function(s, latency)
  local errors = s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout + s.errors.status
  io.write(string.format("RESULT %.0f %.0f %.2f %d %d\n", s.requests / (s.duration / 1e6), s.bytes / (s.duration / 1e6), latency:percentile(99) / 1000, errors, s.requests))
end
EOF
  local result
  result=$(wrk -t2 -c"$conns" -d"${time}s" -s "$work/wrk.lua" "$base" | sed -n 's/^RESULT //p')
  set -- $result
  if [ -z "${5:-}" ] || [ $(($4 * 1000)) -gt "$5" ]; then
    echo "compare.sh: $c answered ${4:-?} of ${5:-?} requests for $path with an error" >&2
    echo "error error error"
    return
  fi
  echo "$1 $2 $3"
}
# The median of the rounds that did not fail; "error" if all did.
median() {
  local ok
  ok=$(printf '%s\n' "$@" | grep -v error || true)
  [ -n "$ok" ] || { echo error; return; }
  echo "$ok" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

SMALL=/debian/pool/main/s/small/small_1.0_all.deb
LARGE=/debian/pool/main/l/large/large_1.0_all.deb
for c in "${caches[@]}"; do
  for _ in 1 2; do fetch "$c" "$SMALL"; fetch "$c" "$LARGE"; done
done

# ---------------------------------------------------------------- hits, interleaved rounds
declare -A small_runs large_runs p99_runs p99_base
echo "== cache hits: $rounds rounds of ${secs}s per contender, interleaved" >&2
for ((r = 0; r < rounds; r++)); do
  note_load "hits, round $((r + 1))"
  n=${#contenders[@]}
  for ((k = 0; k < n; k++)); do
    c=${contenders[$(((k + r) % n))]}
    read -r rps _ p99 < <(bench "$c" "$SMALL" 64 "$secs")
    small_runs[$c]+="$rps "
    p99_runs[$c]+="$p99 "
    read -r _ bps _ < <(bench "$c" "$LARGE" 8 "$secs")
    large_runs[$c]+="$bps "
    echo "   round $((r + 1)) $c: small $rps req/s, large $bps B/s" >&2
  done
done
declare -A small large
for c in "${contenders[@]}"; do
  # shellcheck disable=SC2086
  small[$c]=$(median ${small_runs[$c]})
  # shellcheck disable=SC2086
  large[$c]=$(median ${large_runs[$c]})
  # shellcheck disable=SC2086
  p99_base[$c]=$(median ${p99_runs[$c]})
done

# Where vzpkg's time goes during one more small-hit run, when perf is there.
profile=""
if command -v perf >/dev/null; then
  echo "== profile of vzpkg's small hits (perf)" >&2
  perf record -F 999 -g -o "$work/perf.data" -p "${pid[vzpkg]}" -- sleep "$secs" >/dev/null 2>&1 &
  perf_pid=$!
  read -r profile_rps _ _ < <(bench vzpkg "$SMALL" 64 "$secs")
  wait "$perf_pid" || true
  profile=$(perf report -i "$work/perf.data" --no-children --sort dso,sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 || true)
  threads=$(perf report -i "$work/perf.data" --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5 || true)
fi

# ---------------------------------------------------------------- 50 clients, one cold file
echo "== 50 clients on one cold 20 MB file" >&2
note_load "cold file"
declare -A one_alone last50 gets50
for c in "${caches[@]}"; do
  path=$(cold "one-$c")
  one_alone[$c]=$(fetch "$c" "$path" -w '%{time_total}')
  path=$(cold "fifty-$c")
  : >"$work/curl.cfg"
  for _ in $(seq 50); do printf 'url = "%s%s"\noutput = "/dev/null"\n' "$upstream" "$path" >>"$work/curl.cfg"; done
  started=$(date +%s.%N)
  if parallel_get "$c" 50; then
    last50[$c]=$(echo "$(date +%s.%N) - $started" | bc)
  else
    last50[$c]="failed: $failed_transfers of 50"
  fi
  gets50[$c]=$(upstream_gets "$path")
done

# ---------------------------------------------------------------- peak RSS, 200 downloads
echo "== peak RSS with 200 concurrent downloads of a cold 20 MB file" >&2
note_load "peak RSS"
declare -A rss
rss_note=""
for c in "${caches[@]}"; do
  start "$c"
  path=$(cold "rss-$c")
  : >"$work/curl.cfg"
  for _ in $(seq 200); do printf 'url = "%s%s"\noutput = "/dev/null"\n' "$upstream" "$path" >>"$work/curl.cfg"; done
  parallel_get "$c" 200 || rss_note+=" $c: $failed_transfers of 200 downloads failed or timed out."
  kb=0
  for p in ${pid[$c]} $(pgrep -P "${pid[$c]}" || true); do
    kb=$((kb + $(awk '/^VmHWM/ { print $2 }' "/proc/$p/status")))
  done
  rss[$c]=$((kb / 1024))
  for _ in 1 2; do fetch "$c" "$SMALL"; done
done

# ---------------------------------------------------------------- p99 while an index is learned
echo "== hit p99 while 8 MB Packages files are fetched" >&2
note_load "p99 under index learning"
declare -A p99_learn learned
for c in "${caches[@]}"; do
  for i in 1 2 3 4 5 6; do learn_suite "learn-$c-$i" "$i$RANDOM"; done
  (
    for i in 1 2 3 4 5 6; do
      fetch "$c" "/debian/dists/learn-$c-$i/Release"
      fetch "$c" "/debian/dists/learn-$c-$i/main/binary-amd64/Packages"
    done
  ) &
  loader=$!
  read -r _ _ p99 < <(bench "$c" "$SMALL" 64 "$secs")
  wait "$loader" || true
  p99_learn[$c]=$p99
  learned[$c]=$( { grep -c "index learned" "$work/$c/log" 2>/dev/null || true; } | head -1)
  rm -rf "$up/debian/dists"
done

# ---------------------------------------------------------------- ten containers
declare -A e2e_wall e2e_bytes
e2e_note=""
if [ "${SKIP_E2E:-0}" != 1 ] && [ -f "$rootfs_tar" ]; then
  echo "== ten containers installing the same set" >&2
  note_load "containers"
  # The local repository, laid out as Debian's: 12 packages of 0.5 to 3 MB in suite "bench".
  mkdir -p "$work/debs" "$up/debian/dists/bench/main/binary-all"
  pkgs=()
  for i in $(seq 12); do
    name=bench-e2e-$i
    d=$work/debs/$name
    mkdir -p "$d/DEBIAN" "$d/usr/share/$name" "$up/debian/pool/main/b/$name"
    head -c $(((i % 6 + 1) * 512 * 1024)) /dev/urandom >"$d/usr/share/$name/data"
    printf 'Package: %s\nVersion: 1.0\nArchitecture: all\nMaintainer: Bench <bench@example.org>\nDescription: benchmark package\n' "$name" >"$d/DEBIAN/control"
    dpkg-deb -Zgzip -z1 --build "$d" "$up/debian/pool/main/b/$name/${name}_1.0_all.deb" >/dev/null
    pkgs+=("$name")
  done
  (cd "$up/debian" && apt-ftparchive packages pool/main/b >dists/bench/main/binary-all/Packages)
  gzip -k9 "$up/debian/dists/bench/main/binary-all/Packages"
  (cd "$up/debian/dists/bench" && apt-ftparchive -o APT::FTPArchive::Release::Suite=bench \
    -o APT::FTPArchive::Release::Components=main -o APT::FTPArchive::Release::Architectures=all \
    release . >Release)
  mkdir -p "$work/base"
  tar -xf "$rootfs_tar" -C "$work/base"
  # A container: an overlay of the root with its own upper layer, /proc and /dev, apt pointed
  # at the local repository only. Sets ct_root (not echoed: the mounts must be noted here).
  container() { # name proxy-url-or-empty
    local ct=$work/ct/$1
    mkdir -p "$ct/upper" "$ct/work" "$ct/root"
    mount -t overlay overlay -o "lowerdir=$work/base,upperdir=$ct/upper,workdir=$ct/work" "$ct/root"
    mounts+=("$ct/root")
    mount -t proc proc "$ct/root/proc" && mounts+=("$ct/root/proc")
    mount --rbind /dev "$ct/root/dev" && mounts+=("$ct/root/dev")
    rm -f "$ct/root/etc/apt/sources.list" "$ct/root/etc/apt/sources.list.d/"*
    echo "127.0.0.1 localhost" >"$ct/root/etc/hosts"
    echo "deb [trusted=yes] $upstream/debian bench main" >"$ct/root/etc/apt/sources.list.d/bench.list"
    {
      echo 'APT::Sandbox::User "root";'
      echo 'Acquire::Retries "3";'
      [ -n "$2" ] && echo "Acquire::http::Proxy \"$2\";"
    } >"$ct/root/etc/apt/apt.conf.d/99bench"
    ct_root=$ct/root
  }
  install_in() {
    DEBIAN_FRONTEND=noninteractive chroot "$1" sh -c \
      "apt-get -qq update && apt-get -qq install -y --no-install-recommends ${pkgs[*]} >/dev/null 2>&1"
  }
  upstream_bytes_since() { tail -c +"$(($1 + 1))" "$work/upstream.log" | awk '{ b += $4 } END { print b + 0 }'; }
  for mode in direct "${caches[@]}"; do
    proxy_url=""
    [ "$mode" != direct ] && proxy_url=http://127.0.0.1:${port[$mode]}/
    if [ -n "$proxy_url" ]; then
      container "warm-$mode" "$proxy_url"
      install_in "$ct_root" || echo "compare.sh: warming $mode's cache failed" >&2
    fi
    roots=()
    for n in $(seq 10); do
      container "$mode-$n" "$proxy_url"
      roots+=("$ct_root")
    done
    offset=$(stat -c %s "$work/upstream.log")
    started=$(date +%s.%N)
    installs=()
    for root in "${roots[@]}"; do
      install_in "$root" &
      installs+=("$!")
    done
    failed=0
    for job in "${installs[@]}"; do wait "$job" || failed=1; done
    e2e_wall[$mode]=$(echo "$(date +%s.%N) - $started" | bc)
    e2e_bytes[$mode]=$(upstream_bytes_since "$offset")
    for root in "${roots[@]}"; do
      chroot "$root" dpkg-query -W "${pkgs[@]}" >/dev/null || failed=1
    done
    [ "$failed" = 0 ] || e2e_wall[$mode]=failed
  done
  e2e_note="ten overlays of $(basename "$rootfs_tar") run \`apt-get update && apt-get install\` of 12 packages ($(du -sh "$up/debian/pool/main/b" | cut -f1) of .debs) at once; \"direct\" fetches from the loopback upstream, the others through the cache, warmed beforehand by an eleventh container. Bytes from upstream are the body bytes nginx logged for the ten."
else
  e2e_note="left out (SKIP_E2E=1, or no container tarball at $rootfs_tar: run contrib/test.sh)."
fi

# ---------------------------------------------------------------- BENCHMARKS.md
ratio() { # a b → a/b with two decimals, or "–"
  if [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]] && [ "$(echo "$2 > 0" | bc)" = 1 ]; then
    printf '%.2f×' "$(echo "scale=4; $1 / $2" | bc)"
  else
    echo "–"
  fi
}
fmt() { # value unit-divisor decimals
  [[ "$1" =~ ^[0-9.]+$ ]] || { echo "${1:-–}"; return; }
  printf "%.${3}f" "$(echo "scale=6; $1 / $2" | bc)"
}
cell() { echo "${1:-–}"; }
peers=("${contenders[@]:1}")
{
  echo "# Benchmarks"
  echo
  echo "Written by \`contrib/bench/compare.sh\` (rerun: \`sudo contrib/bench/compare.sh\`, with"
  echo "\`APT_CACHER_RS=/path/to/apt-cacher-rs\` to include apt-cacher-rs). All contenders ran on this"
  echo "machine in one run, on loopback, serving the same files; wrk rounds interleave them."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem/ { print $2 }') GiB RAM, Linux $(uname -r)"
  echo "- vzpkg $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') (release build, default config: one log line per request);" \
    "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), apt-cacher-ng $(dpkg-query -W -f '${Version}' apt-cacher-ng)${acrs_bin:+, apt-cacher-rs $("$acrs_bin" --version | awk '{ print $2 }')}, wrk $(dpkg-query -W -f '${Version}' wrk)"
  echo "- load average (1, 5, 15 min) when each part started: $(printf '%s; ' "${loads[@]}")"
  echo "- wrk: 2 threads, $rounds rounds of ${secs} s per contender and figure, the median of the rounds shown (a round with more than one failed request in a thousand is left out; every round is listed below); the proxies are asked in forward-proxy form (apt's \`Acquire::http::Proxy\`), nginx serves the files directly"
  echo
  printf '| figure |'; for c in "${contenders[@]}"; do printf ' %s |' "$c"; done
  for p in "${peers[@]}"; do printf ' vzpkg ÷ %s |' "$p"; done; echo
  printf '|---|'; for _ in "${contenders[@]}" "${peers[@]}"; do printf -- '---:|'; done; echo
  printf '| small hits, 42 KB .deb, 64 connections (req/s, higher is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(fmt "${small[$c]}" 1 0)"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${small[vzpkg]}" "${small[$p]}")"; done; echo
  printf '| large hits, 20 MB .deb, 8 connections (GB/s, higher is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(fmt "${large[$c]}" 1000000000 2)"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${large[vzpkg]}" "${large[$p]}")"; done; echo
  printf '| small-hit p99 at 64 connections (ms, median of the rounds, lower is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(cell "${p99_base[$c]}")"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${p99_base[vzpkg]}" "${p99_base[$p]}")"; done; echo
  printf '| 50 clients, one cold 20 MB file: upstream GETs |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(cell "${gets50[$c]:-}")"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${gets50[vzpkg]}" "${gets50[$p]:-}")"; done; echo
  printf '| … the last client done (s); one client alone (s) |'
  for c in "${contenders[@]}"; do
    if [ -n "${last50[$c]:-}" ]; then printf ' %s; %s |' "$(fmt "${last50[$c]}" 1 2)" "$(fmt "${one_alone[$c]}" 1 2)"; else printf ' – |'; fi
  done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${last50[vzpkg]}" "${last50[$p]:-}")"; done; echo
  printf '| … the last client ÷ one alone (lower is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(ratio "${last50[$c]:-}" "${one_alone[$c]:-}")"; done
  for _ in "${peers[@]}"; do printf ' |'; done; echo
  printf '| peak RSS, 200 concurrent downloads of a cold 20 MB file (MB, lower is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(cell "${rss[$c]:-}")"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${rss[vzpkg]}" "${rss[$p]:-}")"; done; echo
  printf '| hit p99 while six 8 MB Packages files are fetched (ms, lower is better) |'
  for c in "${contenders[@]}"; do printf ' %s |' "$(cell "${p99_learn[$c]:-}")"; done
  for p in "${peers[@]}"; do printf ' %s |' "$(ratio "${p99_learn[vzpkg]}" "${p99_learn[$p]:-}")"; done; echo
  echo
  echo "Every round, in the order run (small hits in req/s; large hits in bytes/s):"
  echo
  for c in "${contenders[@]}"; do echo "- $c: small ${small_runs[$c]}; large ${large_runs[$c]}"; done
  echo
  [ -n "$rss_note" ] && { echo "Peak RSS:$rss_note"; echo; }
  echo "vzpkg learned ${learned[vzpkg]:-0} Packages files (\"index learned\" log lines) during the last figure; the others do not read indexes."
  echo
  if [ -n "$profile" ]; then
    echo "## Where a small hit's time goes"
    echo
    echo "\`perf record -F 999 -g\` on vzpkg during one more ${secs} s small-hit run ($profile_rps req/s while profiled); \`perf report --no-children --sort dso,sym\`, top entries, then the share per thread:"
    echo
    echo '```'
    echo "$profile"
    echo
    echo "$threads"
    echo '```'
    echo
  fi
  echo "## Ten containers installing the same set"
  echo
  echo "What it measures: $e2e_note"
  echo
  if [ ${#e2e_wall[@]} -gt 0 ]; then
    echo "| from | wall time (s) | bytes from upstream |"
    echo "|---|---:|---:|"
    for mode in direct "${caches[@]}"; do
      echo "| $mode | $(fmt "${e2e_wall[$mode]}" 1 2) | ${e2e_bytes[$mode]} |"
    done
  fi
  echo
  echo "## Targets"
  echo
  echo "small hits ≥ 0.8× nginx: $(ratio "${small[vzpkg]}" "${small[nginx]}");" \
    "≥ 1.5× apt-cacher-rs: $(ratio "${small[vzpkg]}" "${small[apt-cacher-rs]:-}");" \
    "large hits ≥ 1.0× nginx: $(ratio "${large[vzpkg]}" "${large[nginx]}");" \
    "50 clients: 1 upstream GET (${gets50[vzpkg]}), last ≤ 1.1× alone ($(ratio "${last50[vzpkg]}" "${one_alone[vzpkg]}"));" \
    "peak RSS ≤ 64 MB (${rss[vzpkg]} MB); hit p99 unchanged while learning (${p99_base[vzpkg]} → ${p99_learn[vzpkg]} ms)."
} >"$out"
echo "compare.sh: wrote $out" >&2
cat "$out"
