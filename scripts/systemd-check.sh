#!/usr/bin/env bash
# The systemd unit's hardening: `systemd-analyze security --offline=yes` must rate
# systemd/augur.service at an exposure of 2.0 or less, and the unit must raise LimitNOFILE.
# Installs Debian's systemd package when systemd-analyze is missing; skips, saying why, only where
# systemd-analyze cannot analyse a unit offline at all (systemd older than 250).
set -euo pipefail
cd "$(dirname "$0")/.."
unit="${1:-systemd/augur.service}"
max_exposure=2.0

if ! command -v systemd-analyze >/dev/null; then
  echo "== installing Debian's systemd package (systemd-analyze)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
version="$(systemd-analyze --version | awk 'NR==1 {print $2}')"
if [ "${version%%.*}" -lt 250 ] 2>/dev/null; then
  echo "SKIP: systemd $version cannot analyse a unit offline (needs 250 or later)"
  exit 0
fi

grep -Eq '^LimitNOFILE=[0-9]{5,}$' "$unit" || { echo "FAIL: $unit does not raise LimitNOFILE"; exit 1; }

out="$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1)" || true
exposure="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -1)"
if [ -z "$exposure" ]; then
  printf '%s\n' "$out" | tail -20
  echo "FAIL: systemd-analyze gave no exposure level for $unit"
  exit 1
fi
printf '%s\n' "$out" | grep -E '^✗' || true
echo "exposure of $unit: $exposure (at most $max_exposure)"
awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }' || {
  echo "FAIL: exposure $exposure is over $max_exposure"
  exit 1
}
