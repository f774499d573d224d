#!/usr/bin/env bash
# Builds vzpkg and installs it with its kit: the binary, man pages and shell completions
# (generated from the clap definitions by `cargo xtask assets`), the systemd units (proxy,
# prune service and timer), the sample config as documentation, and the dedicated user the
# proxy runs as. `--cron` installs /etc/cron.d/vzpkg instead of enabling the timer.
#
#   sudo contrib/install.sh            # PREFIX=/usr/local
#   DESTDIR=/tmp/pkg contrib/install.sh   # staging for a package: no user, no systemctl
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
cron=no
[ "${1:-}" = "--cron" ] && cron=yes
target=${CARGO_TARGET_DIR:-target}

cargo build --release --locked
cargo xtask assets "$target/assets" >/dev/null

install -Dm755 "$target/release/vzpkg" "$dest$prefix/bin/vzpkg"
for page in "$target"/assets/man/man1/*.1; do
  install -Dm644 "$page" "$dest$prefix/share/man/man1/$(basename "$page")"
done
install -Dm644 "$target/assets/completions/vzpkg.bash" "$dest$prefix/share/bash-completion/completions/vzpkg"
install -Dm644 "$target/assets/completions/_vzpkg" "$dest$prefix/share/zsh/site-functions/_vzpkg"
install -Dm644 "$target/assets/completions/vzpkg.fish" "$dest$prefix/share/fish/vendor_completions.d/vzpkg.fish"
install -Dm644 README.md "$dest$prefix/share/doc/vzpkg/README.md"
# The sample holds examples that would apply if it were the config: documentation only.
install -Dm644 contrib/vzpkg.toml "$dest$prefix/share/doc/vzpkg/vzpkg.toml.example"
for f in contrib/clients/*; do
  install -Dm644 "$f" "$dest$prefix/share/doc/vzpkg/clients/$(basename "$f")"
done
for unit in vzpkg-proxy.service vzpkg-prune.service vzpkg-prune.timer; do
  sed "s#/usr/local/bin/vzpkg#$prefix/bin/vzpkg#; s#/usr/local/share/doc#$prefix/share/doc#" \
    "contrib/systemd/$unit" | install -Dm644 /dev/stdin "$dest/etc/systemd/system/$unit"
done
if [ "$cron" = yes ]; then
  sed "s#^PATH=#PATH=$prefix/bin:#" contrib/cron.d/vzpkg | install -Dm644 /dev/stdin "$dest/etc/cron.d/vzpkg"
fi
install -d -m755 "$dest/etc/vzpkg"

if [ -z "$dest" ]; then
  getent passwd vzpkg >/dev/null ||
    useradd --system --home-dir /var/cache/vzpkg --no-create-home --shell /usr/sbin/nologin vzpkg
  install -d -m755 -o vzpkg -g vzpkg /var/cache/vzpkg
  install -d -m700 /var/lib/vzpkg
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "install.sh: start the proxy with: systemctl enable --now vzpkg-proxy.service"
    [ "$cron" = yes ] || echo "install.sh: prune daily with:     systemctl enable --now vzpkg-prune.timer"
  fi
fi
echo "install.sh: installed $prefix/bin/vzpkg; configuration: /etc/vzpkg/vzpkg.toml (see $prefix/share/doc/vzpkg/vzpkg.toml.example)"
