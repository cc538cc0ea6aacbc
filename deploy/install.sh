#!/usr/bin/env bash
# Install the gearwatch edge agent on a gateway (Debian/Ubuntu with systemd), from this checkout.
#
#   sudo deploy/install.sh              # first install
#   sudo deploy/install.sh --upgrade    # new code and units; config and state are kept
#
# What goes where (override with the options):
#   /opt/gearwatch/venv        the agent, in its own virtualenv (pip install . -c constraints.txt)
#   /opt/gearwatch/bin         retrain.sh, uninstall.sh
#   /etc/gearwatch             gearwatch.toml (never overwritten), gearwatch.env (secrets, 0640),
#                              retrain.env, keys/ (trusted model-signing keys)
#   /var/lib/gearwatch         state: spool, event database, models/, status.json
#   /etc/systemd/system        gearwatch-agent.service, gearwatch-retrain.service + .timer
#
# Options:
#   --root DIR       install under DIR as if it were / (packaging, tests); implies no systemctl
#   --prefix DIR     program directory (default /opt/gearwatch)
#   --confdir DIR    configuration directory (default /etc/gearwatch)
#   --statedir DIR   state directory (default /var/lib/gearwatch)
#   --unitdir DIR    systemd unit directory (default /etc/systemd/system)
#   --python PY      interpreter for the virtualenv (default python3, >= 3.11)
#   --upgrade        the install exists: replace code and units, keep config and state, restart
#   --no-deps        do not install dependencies (an offline gateway whose venv already has them)
#   --skip-system    (tests) no useradd, chown or systemctl; everything else is done for real
#   --no-start       install and enable, but do not start the agent
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/.." && pwd)"
root="" prefix=/opt/gearwatch confdir=/etc/gearwatch statedir=/var/lib/gearwatch
unitdir=/etc/systemd/system python=python3 upgrade=0 nodeps=0 skip_system=0 start=1
user=gearwatch

die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac   # --opt=value
  case "$1" in
    --root) root="${2%/}"; shift ;;
    --prefix) prefix="$2"; shift ;;
    --confdir) confdir="$2"; shift ;;
    --statedir) statedir="$2"; shift ;;
    --unitdir) unitdir="$2"; shift ;;
    --python) python="$2"; shift ;;
    --upgrade) upgrade=1 ;;
    --no-deps) nodeps=1 ;;
    --skip-system) skip_system=1 ;;
    --no-start) start=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[ -n "$root" ] && skip_system=1   # a staging root is not the running system
if [ "$skip_system" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 $*), or use --root DIR to stage an install"
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is older than 3.11; pass --python /path/to/python3.11"

R() { echo "$root$1"; }   # a path on the target system, seen from here
venv="$(R "$prefix")/venv"

if [ -x "$venv/bin/gearwatch" ] && [ "$upgrade" -eq 0 ]; then
  die "gearwatch is already installed in $prefix; use --upgrade (config and state are kept)"
fi
if [ "$upgrade" -eq 1 ] && [ ! -x "$venv/bin/gearwatch" ]; then
  die "--upgrade: no install found in $prefix; run without --upgrade first"
fi

echo "==> gearwatch $(grep -m1 '^version' "$src/pyproject.toml" | cut -d'"' -f2) from $src"

# 1. the system user (no login, no home directory of its own)
if [ "$skip_system" -eq 0 ] && ! id -u "$user" >/dev/null 2>&1; then
  echo "==> creating system user $user"
  useradd --system --user-group --home-dir "$statedir" --no-create-home \
    --shell /usr/sbin/nologin --comment "gearwatch edge agent" "$user"
fi
if [ "$skip_system" -eq 0 ] && getent group dialout >/dev/null; then
  usermod -a -G dialout "$user"   # serial instruments
fi

# 2. directories
install -d -m 0755 "$(R "$prefix")" "$(R "$prefix")/bin" "$(R "$unitdir")"
install -d -m 0750 "$(R "$confdir")" "$(R "$confdir")/keys"
install -d -m 0750 "$(R "$statedir")" "$(R "$statedir")/models" "$(R "$statedir")/spool" \
  "$(R "$statedir")/retrain"

# 3. the virtualenv and the package (pinned versions from constraints.txt)
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating virtualenv $prefix/venv"
  "$python" -m venv "$venv"
fi
pipargs=(--disable-pip-version-check --quiet)
if [ "$nodeps" -eq 1 ]; then
  pipargs+=(--no-deps)
else
  "$venv/bin/pip" install "${pipargs[@]}" --upgrade pip
fi
echo "==> installing the package into $prefix/venv (this takes a few minutes the first time)"
"$venv/bin/pip" install "${pipargs[@]}" --upgrade -c "$src/constraints.txt" "$src"
install -m 0755 "$here/retrain.sh" "$here/uninstall.sh" "$(R "$prefix")/bin/"
install -m 0644 "$src/README.md" "$(R "$prefix")/README.md"

# 4. configuration: never overwrite what the operator edited
install_conf() {  # SRC DEST MODE
  local dest; dest="$(R "$2")"
  if [ ! -e "$dest" ]; then
    sed -e "s|^state_dir = .*|state_dir = \"$statedir\"|" "$1" > "$dest"
    chmod "$3" "$dest"
    echo "==> wrote $2"
  elif ! cmp -s <(sed -e "s|^state_dir = .*|state_dir = \"$statedir\"|" "$1") "$dest"; then
    sed -e "s|^state_dir = .*|state_dir = \"$statedir\"|" "$1" > "$dest.new"
    chmod "$3" "$dest.new"
    echo "==> kept $2 (yours); the shipped version is $2.new"
  fi
}
install_conf "$here/gearwatch.toml" "$confdir/gearwatch.toml" 0640
install_conf "$here/gearwatch.env" "$confdir/gearwatch.env" 0640
install_conf "$here/retrain.env" "$confdir/retrain.env" 0640

# 5. systemd units, with this install's paths
for f in "$here"/systemd/*; do
  name="$(basename "$f" .in)"
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFDIR@|$confdir|g" -e "s|@STATEDIR@|$statedir|g" \
    "$f" > "$(R "$unitdir")/$name"
  chmod 0644 "$(R "$unitdir")/$name"
done
echo "==> installed units in $unitdir: $(cd "$here/systemd" && ls | sed 's/\.in$//' | xargs)"

# 6. ownership and services
if [ "$skip_system" -eq 1 ]; then
  echo "==> skipped: chown, systemctl (staged install under ${root:-/})"
  exit 0
fi
chown -R root:"$user" "$confdir"
chown -R "$user:$user" "$statedir"
systemctl daemon-reload
systemctl enable gearwatch-agent.service gearwatch-retrain.timer >/dev/null
if [ "$upgrade" -eq 1 ]; then
  if systemctl is-active --quiet gearwatch-agent.service; then
    echo "==> restarting gearwatch-agent"
    systemctl restart gearwatch-agent.service
  fi
elif [ "$start" -eq 1 ]; then
  "$venv/bin/gearwatch" agent check -c "$confdir/gearwatch.toml" \
    && systemctl start gearwatch-agent.service gearwatch-retrain.timer \
    || echo "==> not started: edit $confdir/gearwatch.toml, then: systemctl start gearwatch-agent"
fi
cat <<EOF
==> done.  Next:
    edit $confdir/gearwatch.toml (broker, InfluxDB, assets) and $confdir/gearwatch.env (secrets)
    $prefix/venv/bin/gearwatch doctor -c $confdir/gearwatch.toml
    systemctl restart gearwatch-agent; $prefix/venv/bin/gearwatch agent status -c $confdir/gearwatch.toml
EOF
