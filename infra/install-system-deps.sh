#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, only where absent:
# Java and Maven fetch and run Kafka; clickhouse-server backs the native-protocol
# tests; promtool (package prometheus) checks the production alert rules; chromium runs
# the browser tests (driven by Playwright, which downloads no browser of its own);
# opencv-doc carries the real footage (vtest.avi) the vision tests run on.
set -euo pipefail
declare -A package_for=(
  [java]=openjdk-17-jre-headless
  [mvn]=maven
  [clickhouse-server]=clickhouse-server
  [clickhouse-client]=clickhouse-client
  [promtool]=prometheus
  [chromium]=chromium
)
need=()
for command in "${!package_for[@]}"; do
  command -v "$command" >/dev/null || need+=("${package_for[$command]}")
done
# A Chinese font, so the pages (and the browser tests' screenshots) show their text.
fc-list :lang=zh 2>/dev/null | grep -q . || need+=(fonts-noto-cjk)
[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] || need+=(opencv-doc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
