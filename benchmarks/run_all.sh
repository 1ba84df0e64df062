#!/usr/bin/env bash
# Run the speed benchmarks one after the other and keep each one's output.
#
#   benchmarks/run_all.sh [OUTDIR] [-- ARGS…]
#
# OUTDIR (default benchmarks/results/) receives NAME.log per script and RATIOS.txt (every
# script's last line).  ARGS are passed to the scripts that take them (--device, --workers).
# The label-budget sweep (label_efficiency.py) is long and is run on its own.
# PYTHON selects the interpreter (default: .venv/bin/python, else python3).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/results}"; shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
py="${PYTHON:-}"
[ -z "$py" ] && { [ -x "$here/../.venv/bin/python" ] && py="$here/../.venv/bin/python" || py=python3; }
export PYTHONUNBUFFERED=1
: >"$out/RATIOS.txt"
status=0
for name in data_pipeline trainer_overhead volume_inference preprocessing similarity_svcca; do
  extra=()
  case "$name" in  # the scripts that choose a device / workers
    data_pipeline|trainer_overhead|volume_inference) extra=("$@") ;;
  esac
  var="ARGS_${name}"  # per-script extra arguments, e.g. ARGS_data_pipeline="--steps 20"
  read -r -a own <<<"${!var:-}"
  echo "### $name" | tee "$out/$name.log"
  start=$(date +%s)
  "$py" "$here/$name.py" "${extra[@]}" "${own[@]}" 2>&1 | tee -a "$out/$name.log"
  rc=${PIPESTATUS[0]}
  echo "### $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/$name.log"
  { echo -n "$name: "; grep '^RATIOS' "$out/$name.log" || echo "failed (exit $rc)"; } >>"$out/RATIOS.txt"
  [ "$rc" -ne 0 ] && status=1
done
cat "$out/RATIOS.txt"
exit $status
