#!/usr/bin/env bash
# Installs what the tests need on a Debian machine (as root, or with sudo), then runs every
# test of the workspace. This is the command the README gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests drive for real.
packages=(dpkg-dev apt-utils gzip xz-utils rpm createrepo-c dnf gcc libc6-dev gpg gpg-agent gpgv mmdebstrap python3
  busybox-static keyutils mount libcap2-bin sqlite3 lxc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo is missing: install a Rust toolchain (1.80 or newer), e.g. with rustup" >&2
  exit 1
fi

# A Debian root for the wrapper tests, made once with mmdebstrap and its default mirror, and
# kept outside the repository so reruns are fast.
rootfs=${VZPKG_TEST_ROOTFS:-/var/cache/vzpkg-tests/debian-apt.tar}
if [ ! -f "$rootfs" ]; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-stable}")
  echo "test.sh: making the test container root ($suite) at $rootfs" >&2
  mkdir -p "$(dirname "$rootfs")"
  mmdebstrap --quiet --variant=apt "$suite" "${rootfs%.tar}.part.tar"
  mv "${rootfs%.tar}.part.tar" "$rootfs"
fi
export VZPKG_TEST_ROOTFS="$rootfs"

# The same with Debian's rpm, dnf and zypper, for the rpm backends' tests (rpm's database is
# moved where rpm-based systems keep it by the tests themselves).
rpm_rootfs=${VZPKG_TEST_RPM_ROOTFS:-/var/cache/vzpkg-tests/debian-rpm.tar}
if [ ! -f "$rpm_rootfs" ]; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-stable}")
  echo "test.sh: making the rpm test container root ($suite) at $rpm_rootfs" >&2
  mkdir -p "$(dirname "$rpm_rootfs")"
  mmdebstrap --quiet --variant=apt --include=dnf,rpm,zypper "$suite" "${rpm_rootfs%.tar}.part.tar"
  mv "${rpm_rootfs%.tar}.part.tar" "$rpm_rootfs"
fi
export VZPKG_TEST_RPM_ROOTFS="$rpm_rootfs"

# The .deb files of an mmdebstrap --variant=apt root plus a few small extras, for the template
# tests, which serve them from a loopback repository of their own (made once, like the roots).
template_debs=${VZPKG_TEST_TEMPLATE_DEBS:-/var/cache/vzpkg-tests/template-debs}
if ! compgen -G "$template_debs/jq_*.deb" >/dev/null || ! compgen -G "$template_debs/dpkg_*.deb" >/dev/null; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-stable}")
  echo "test.sh: downloading the packages of a $suite root into $template_debs" >&2
  rm -rf "$template_debs.part" && mkdir -p "$template_debs.part"
  mmdebstrap --quiet --variant=apt --include=less,whiptail,jq,nano,bzip2 --skip=download/empty,essential/unlink --format=null \
    --customize-hook="sync-out /var/cache/apt/archives $template_debs.part" "$suite" /dev/null
  rm -rf "$template_debs" && mv "$template_debs.part" "$template_debs"
fi
export VZPKG_TEST_TEMPLATE_DEBS="$template_debs"

# iputils-ping, whose postinst gives ping a file capability with setcap, and libcap2-bin, which
# has setcap: the apt-variant root lacks both (the rest of what they depend on it has). The
# confinement and template tests serve them from their own loopback repositories.
debs=${VZPKG_TEST_DEBS:-/var/cache/vzpkg-tests/debs}
if ! compgen -G "$debs/iputils-ping_*.deb" >/dev/null || ! compgen -G "$debs/libcap2-bin_*.deb" >/dev/null; then
  echo "test.sh: downloading iputils-ping and libcap2-bin into $debs" >&2
  rm -rf "$debs.part" && mkdir -p "$debs.part"
  (cd "$debs.part" && { apt-get download -q iputils-ping libcap2-bin || { apt-get update -q && apt-get download -q iputils-ping libcap2-bin; }; })
  rm -rf "$debs" && mv "$debs.part" "$debs"
fi
export VZPKG_TEST_DEBS="$debs"

cargo test --workspace --locked
