#!/usr/bin/env bash
# Remove the gearwatch agent: units, virtualenv and program directory.  Configuration
# (/etc/gearwatch) and state (/var/lib/gearwatch: spool, events, models) are kept unless --purge.
#
#   sudo /opt/gearwatch/bin/uninstall.sh            # keep config and state
#   sudo /opt/gearwatch/bin/uninstall.sh --purge    # remove them too, and the gearwatch user
#
# Options: --root DIR, --prefix DIR, --confdir DIR, --statedir DIR, --unitdir DIR,
#          --skip-system (tests: no systemctl/userdel), --purge
set -euo pipefail
root="" prefix=/opt/gearwatch confdir=/etc/gearwatch statedir=/var/lib/gearwatch
unitdir=/etc/systemd/system purge=0 skip_system=0 user=gearwatch
die() { echo "uninstall.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac   # --opt=value
  case "$1" in
    --root) root="${2%/}"; shift ;;
    --prefix) prefix="$2"; shift ;;
    --confdir) confdir="$2"; shift ;;
    --statedir) statedir="$2"; shift ;;
    --unitdir) unitdir="$2"; shift ;;
    --purge) purge=1 ;;
    --skip-system) skip_system=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[ -n "$root" ] && skip_system=1
if [ "$skip_system" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then die "run as root"; fi
R() { echo "$root$1"; }
units=(gearwatch-agent.service gearwatch-retrain.service gearwatch-retrain.timer)

if [ "$skip_system" -eq 0 ]; then
  systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
fi
for u in "${units[@]}"; do rm -f "$(R "$unitdir")/$u"; done
[ "$skip_system" -eq 0 ] && systemctl daemon-reload
# the program directory holds nothing the operator made: venv, scripts, README
case "$prefix" in /|/usr|/usr/local|/opt|"") die "refusing to remove prefix $prefix" ;; esac
rm -rf "$(R "$prefix")"
echo "==> removed units and $prefix"
if [ "$purge" -eq 1 ]; then
  rm -rf "$(R "$confdir")" "$(R "$statedir")"
  if [ "$skip_system" -eq 0 ] && id -u "$user" >/dev/null 2>&1; then userdel "$user"; fi
  echo "==> purged $confdir and $statedir"
else
  echo "==> kept $confdir (configuration) and $statedir (spool, events, models);" \
       "remove them with --purge"
fi
