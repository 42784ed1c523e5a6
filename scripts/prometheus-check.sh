#!/usr/bin/env bash
# A real Prometheus against a real `augur serve`: promtool on /metrics and on the alert rules, a
# Prometheus server scraping the daemon, and every query of the Grafana dashboard run against it.
# Installs Debian's `prometheus` package when promtool or the server is missing (CI machines are
# fresh). Everything listens on 127.0.0.1 and stops by itself; the whole check is bounded in time.
#
# Usage: scripts/prometheus-check.sh [path/to/augur]   (default: target/release/augur, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "== installing Debian's prometheus package (promtool and the server)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "== $(prometheus --version 2>&1 | head -1)"

echo "== promtool check rules / test rules (dashboards/alerts.yml)"
promtool check rules dashboards/alerts.yml
promtool test rules dashboards/alerts.test.yml

augur="${1:-target/release/augur}"
if [ ! -x "$augur" ]; then
  cargo build --release --bin augur
fi

# The daemon, Prometheus and the traffic, bounded as a whole (they stop themselves well before).
timeout --kill-after=10 300 python3 scripts/prometheus_check.py --augur "$augur"
