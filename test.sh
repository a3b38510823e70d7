#!/usr/bin/env bash
# Runs Lingxi's whole test suite on a fresh machine: installs what the tests need, then
# `cargo test --workspace`. Used by CI (.ci/run) and by developers alike.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
# Headless browser tests (WebRTC gateway, agent console): Debian's Chromium and its driver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# A CJK font, so the console's Chinese screenshots show characters, not boxes.
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt+=(fonts-wqy-microhei)
# Chaos runs (lingxi-chaos): clock jumps preload libfaketime into the nodes; disk-full puts
# each node's data on a loop-mounted ext4; slow fsync builds an interposer with cc.
compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null || need_apt+=(libfaketime)
command -v faketime >/dev/null 2>&1 || need_apt+=(faketime)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if ((${#need_apt[@]})); then
  echo "test.sh: installing ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# The browser tests must not skip here: Chromium was just installed.
export LINGXI_REQUIRE_BROWSER=1
# Clock, disk-full and slow-fsync chaos faults need root, libfaketime and gcc (installed above).
export LINGXI_REQUIRE_HOST_FAULTS=1

# The cluster tests run real `lingxi` processes: build the binary first.
cargo build --locked -p lingxi-node
# Two test threads: the suites start real nodes and sipp processes on loopback.
cargo test --workspace --locked -- --test-threads=2 "$@"
