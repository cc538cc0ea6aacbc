#!/usr/bin/env bash
# Scheduled retraining, run by gearwatch-retrain.service (settings: /etc/gearwatch/retrain.env).
# For each asset class:
#   1. gearwatch train fit       on the last RETRAIN_DAYS days of telemetry in InfluxDB
#   2. gearwatch train evaluate  the candidate and the running model (the newest bundle in the
#                                registry) on the same history with the labelled events
#   3. gearwatch train publish   the candidate only if it is not worse (gearwatch.retrain_gate)
# Exit status: 0 when every class was retrained (published or kept), 1 when any step failed.
set -euo pipefail

GEARWATCH="${GEARWATCH:-gearwatch}"
PY="${GEARWATCH_PYTHON:-python3}"
statedir="${RETRAIN_STATEDIR:-/var/lib/gearwatch}"
classes="${RETRAIN_ASSET_CLASSES:-centrifugal_pump}"
days="${RETRAIN_DAYS:-14}"
registry="${RETRAIN_REGISTRY:-$statedir/models}"
trusted="${RETRAIN_TRUSTED_KEYS:-/etc/gearwatch/keys}"
signing_key="${RETRAIN_SIGNING_KEY:-/etc/gearwatch/keys/gearwatch.key}"
labels="${RETRAIN_LABELS:-$statedir/labels.csv}"
work="${RETRAIN_WORKDIR:-$statedir/retrain}/$(date -u +%Y%m%dT%H%M%SZ)"
end="${RETRAIN_END:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
start="${RETRAIN_START:-$(date -u -d "$end - $days days" +%Y-%m-%dT%H:%M:%SZ)}"

say() { echo "retrain: $*"; }
# history arguments shared by fit and evaluate
hist=()
if [ -n "${RETRAIN_DATA:-}" ]; then          # a history file instead of InfluxDB (tests, replays)
  hist+=(--data "$RETRAIN_DATA")
  [ -n "${RETRAIN_ASSET_COL:-}" ] && hist+=(--asset-col "$RETRAIN_ASSET_COL")
else
  hist+=(--influx-url "${RETRAIN_INFLUX_URL:-http://127.0.0.1:8086}" --start "$start" --end "$end")
  if [ -n "${RETRAIN_INFLUX_BUCKET:-}" ]; then
    hist+=(--influx-org "$RETRAIN_INFLUX_ORG" --influx-bucket "$RETRAIN_INFLUX_BUCKET"
           --influx-token "${GEARWATCH_INFLUX_TOKEN:?GEARWATCH_INFLUX_TOKEN is not set}")
  else
    hist+=(--influx-db "${RETRAIN_INFLUX_DB:-gearwatch}")
    if [ -n "${RETRAIN_INFLUX_USER:-}" ]; then
      hist+=(--influx-user "$RETRAIN_INFLUX_USER"
             --influx-password "${GEARWATCH_INFLUX_PASSWORD:-}")
    fi
  fi
fi
eval_args=()
if [ -f "$labels" ]; then
  eval_args+=(--labels "$labels")
else
  say "no labels file $labels: judging on false alarms only"
fi
# shellcheck disable=SC2206  # word splitting of the extra arguments is intended
fit_extra=(${RETRAIN_FIT_ARGS:-})
mkdir -p "$work"
say "history $start .. $end; work dir $work"

failed=0
for cls in $classes; do
  d="$work/$cls"
  mkdir -p "$d"
  cand="$d/candidate.gwb"
  if ! "$GEARWATCH" train fit "${hist[@]}" --asset-class "$cls" --signing-key "$signing_key" \
      --out "$cand" "${fit_extra[@]}"; then
    say "$cls: fit failed; the running model stays"; failed=1; continue
  fi
  if ! "$GEARWATCH" train evaluate --bundle "$cand" --trusted-key "$trusted" "${hist[@]}" \
      "${eval_args[@]}" --out "$d/candidate"; then
    say "$cls: evaluating the candidate failed; the running model stays"; failed=1; continue
  fi
  # the running model: what ACTIVE names (rollbacks pin it), else the newest bundle
  running=""
  if [ -s "$registry/$cls/ACTIVE" ]; then
    running="$registry/$cls/$(tr -d '[:space:]' < "$registry/$cls/ACTIVE").gwb"
    [ -f "$running" ] || running=""
  fi
  [ -n "$running" ] || running="$(ls -1 "$registry/$cls"/*.gwb 2>/dev/null | sort | tail -n1 || true)"
  gate=("$PY" -m gearwatch.retrain_gate "$d/candidate/metrics.json"
        --tolerance "${RETRAIN_F1_TOLERANCE:-0}")
  if [ -n "$running" ]; then
    if ! "$GEARWATCH" train evaluate --bundle "$running" --trusted-key "$trusted" "${hist[@]}" \
        "${eval_args[@]}" --out "$d/running"; then
      say "$cls: evaluating the running model $running failed; not replacing it"
      failed=1; continue
    fi
    gate+=(--running "$d/running/metrics.json")
  fi
  if "${gate[@]}" > "$d/verdict.txt"; then
    cat "$d/verdict.txt"
    pub=(--bundle "$cand" --trusted-key "$trusted" --registry "$registry")
    if [ -n "${RETRAIN_MQTT_HOST:-}" ]; then
      pub+=(--mqtt-host "$RETRAIN_MQTT_HOST" --mqtt-port "${RETRAIN_MQTT_PORT:-1883}")
    fi
    if "$GEARWATCH" train publish "${pub[@]}"; then
      say "$cls: published"
    else
      say "$cls: publish failed"; failed=1
    fi
  else
    rc=$?
    cat "$d/verdict.txt"
    if [ "$rc" -eq 1 ]; then say "$cls: kept the running model"; else failed=1; fi
  fi
done
exit "$failed"
