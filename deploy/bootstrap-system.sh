#!/usr/bin/env bash
# Installs the Debian packages gearwatch's demo and tests run against (real servers, no mocks):
# Mosquitto and its clients, InfluxDB 1.x, VictoriaMetrics (an InfluxDB v2 write endpoint),
# Chromium with its driver (console browser tests), systemd-analyze and promtool (deploy checks). Root installs; others get the command.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mosquitto || need+=(mosquitto)
have mosquitto_sub || need+=(mosquitto-clients)
have influxd || need+=(influxdb)
have victoria-metrics || need+=(victoria-metrics)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
have systemd-analyze || need+=(systemd)        # verify/security of the installed units
have promtool || need+=(prometheus)            # promtool check rules (Prometheus alert rules)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "gearwatch needs these Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's packages may start system-wide services; gearwatch starts its own on free ports.
for svc in mosquitto influxdb victoria-metrics prometheus; do
  (command -v systemctl >/dev/null && systemctl disable --now "$svc" >/dev/null 2>&1) || true
done
