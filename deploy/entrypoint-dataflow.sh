#!/usr/bin/env bash
# Start one process of the liveprofile Bytewax cluster inside a StatefulSet pod.
#
#   process id  = the pod ordinal (the number after the last '-' of the pod name,
#                 e.g. liveprofile-dataflow-1 -> 1)
#   addresses   = <sts>-0.<svc>:<port>;<sts>-1.<svc>:<port>;... for BYTEWAX_REPLICAS pods
#                 (<svc> is the headless Service; same list, same order, on every pod)
#   recovery    = initialised on this pod's PVC the first time, then
#                 exec python -m bytewax.run dataflows.profiles:flow -i ID -a ADDRS -r DIR -s 2 -b 10
#
# Recovery layout (Bytewax: "the cluster as a whole must have access to all
# partitions"; each pod has its own PVC, so each partition must live on exactly
# one pod). `python -m bytewax.recovery TMP P` creates part-0..part-(P-1); pod k
# keeps part-k when k < P and discards the rest; pods with k >= P start with an
# empty recovery directory (valid: a process may own no partition). So:
#   * BYTEWAX_RECOVERY_PARTITIONS (P) is fixed at the first start, where it must be
#     <= BYTEWAX_REPLICAS; set it to the replica count you first deploy with.
#   * Scaling up later needs nothing: new pods join with an empty directory.
#   * Scaling below P needs the partition files of pods >= new size moved onto the
#     remaining pods first (Bytewax refuses to resume with a partition missing), or
#     all recovery PVCs wiped (the dataflow then re-reads the buffer streams).
# A marker file records the layout; a pod whose PVC holds another layout refuses
# to start instead of silently resuming from inconsistent state.
#
# Environment (defaults in brackets):
#   BYTEWAX_POD_NAME            pod name (downward API) [$HOSTNAME, else `hostname`]
#   BYTEWAX_REPLICAS            number of dataflow pods = StatefulSet replicas [1]
#   BYTEWAX_STATEFULSET_NAME    [pod name without its ordinal]
#   BYTEWAX_SERVICE_NAME        headless Service of the StatefulSet [StatefulSet name]
#   BYTEWAX_SERVICE_DOMAIN      optional suffix, e.g. liveprofile.svc.cluster.local []
#   BYTEWAX_CLUSTER_PORT        [2101]
#   BYTEWAX_RECOVERY_DIRECTORY  [/var/lib/liveprofile/recovery]
#   BYTEWAX_RECOVERY_PARTITIONS [BYTEWAX_REPLICAS]
#   BYTEWAX_SNAPSHOT_INTERVAL   seconds, -s [2]
#   BYTEWAX_RECOVERY_BACKUP_INTERVAL  seconds, -b [10]
#   DATAFLOW_IMPORT             import string of the flow [dataflows.profiles:flow]
set -euo pipefail

die() {
  echo "entrypoint-dataflow: $*" >&2
  exit 64
}
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

pod="${BYTEWAX_POD_NAME:-${HOSTNAME:-}}"
[ -n "$pod" ] || pod="$(hostname)"
ordinal="${pod##*-}"
{ [ "$ordinal" != "$pod" ] && is_uint "$ordinal"; } ||
  die "cannot derive the process id from pod name '$pod' (expected <statefulset>-<ordinal>)"
ordinal=$((10#$ordinal))

sts="${BYTEWAX_STATEFULSET_NAME:-${pod%-*}}"
svc="${BYTEWAX_SERVICE_NAME:-$sts}"
domain="${BYTEWAX_SERVICE_DOMAIN:-}"
port="${BYTEWAX_CLUSTER_PORT:-2101}"
replicas="${BYTEWAX_REPLICAS:-1}"
rec="${BYTEWAX_RECOVERY_DIRECTORY:-/var/lib/liveprofile/recovery}"
parts="${BYTEWAX_RECOVERY_PARTITIONS:-$replicas}"
snap="${BYTEWAX_SNAPSHOT_INTERVAL:-2}"
backup="${BYTEWAX_RECOVERY_BACKUP_INTERVAL:-10}"
flow="${DATAFLOW_IMPORT:-dataflows.profiles:flow}"

for v in replicas parts port snap backup; do
  is_uint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
[ "$replicas" -ge 1 ] || die "BYTEWAX_REPLICAS must be >= 1"
[ "$parts" -ge 1 ] || die "BYTEWAX_RECOVERY_PARTITIONS must be >= 1"
[ "$ordinal" -lt "$replicas" ] ||
  die "pod ordinal $ordinal is outside BYTEWAX_REPLICAS=$replicas: keep BYTEWAX_REPLICAS equal to the StatefulSet's replicas"

addrs=""
for ((i = 0; i < replicas; i++)); do
  addrs+="${addrs:+;}${sts}-${i}.${svc}${domain:+.$domain}:${port}"
done

# --- recovery directory ----------------------------------------------------------
marker="$rec/.liveprofile-recovery-layout"
want="partitions=$parts"
if [ -f "$marker" ]; then
  have="$(head -n 1 "$marker")"
  [ "$have" = "$want" ] ||
    die "$rec was initialised with '$have' but BYTEWAX_RECOVERY_PARTITIONS gives '$want'; refusing to resume from an inconsistent layout (see deploy/README.md, Recovery)"
elif compgen -G "$rec/part-*.sqlite3" >/dev/null; then
  echo "entrypoint-dataflow: $rec holds partitions but no layout marker (placed by hand?); using them as they are" >&2
else
  [ "$parts" -le "$replicas" ] ||
    die "BYTEWAX_RECOVERY_PARTITIONS=$parts > BYTEWAX_REPLICAS=$replicas: partitions are created on pods 0..$((parts - 1)), so some would never exist"
  # First start on this PVC: build the layout beside the final directory, then
  # rename it into place, so a crash half-way leaves no half-initialised directory.
  parent="$(dirname "$rec")"
  mkdir -p "$parent"
  tmp="$(mktemp -d "$parent/.recovery-init.XXXXXX")"
  python -m bytewax.recovery "$tmp" "$parts"
  for f in "$tmp"/part-*.sqlite3; do
    n="${f##*/part-}"
    n="${n%.sqlite3}"
    [ "$n" = "$ordinal" ] || rm -f -- "$f"
  done
  owned="none"
  [ -f "$tmp/part-$ordinal.sqlite3" ] && owned="part-$ordinal"
  printf '%s\nowned=%s ordinal=%s replicas_at_init=%s\n' "$want" "$owned" "$ordinal" "$replicas" >"$tmp/.liveprofile-recovery-layout"
  if [ -d "$rec" ]; then rmdir -- "$rec" 2>/dev/null || die "$rec exists, is not empty and has no partitions: remove it or move it away"; fi
  mv -- "$tmp" "$rec"
  echo "entrypoint-dataflow: initialised $rec ($want, this pod owns $owned)" >&2
fi

if [ "$parts" -gt "$replicas" ]; then
  echo "entrypoint-dataflow: BYTEWAX_RECOVERY_PARTITIONS=$parts > BYTEWAX_REPLICAS=$replicas: the partitions of pods >= $replicas must have been moved onto these pods (else Bytewax stops with MissingPartitionsError)" >&2
fi
echo "entrypoint-dataflow: process $ordinal of $replicas, addresses $addrs" >&2
exec python -m bytewax.run "$flow" -i "$ordinal" -a "$addrs" -r "$rec" -s "$snap" -b "$backup"
