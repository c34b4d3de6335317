#!/usr/bin/env bash
# Regenerate every figure: ./run_all.sh [--profile smoke|quick|paper] [--only 01,03] [--recompute] [--device auto|cpu|cuda]
# Each notebook of figures/manifest.json runs through papermill (executed copy + HTML in
# build/executed/); stored runs are reused unless --recompute; the claims table is printed last.
set -euo pipefail
cd "$(dirname "$0")"

profile=quick only="" recompute="" device=""
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --only) only="${2:?--only needs a value}"; shift 2 ;;
    --recompute) recompute=1; shift ;;
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$profile" in smoke|quick|paper) ;; *) echo "run_all.sh: --profile must be smoke, quick or paper, got '$profile'" >&2; exit 2 ;; esac
case "$device" in ""|auto|cpu|cuda|cuda:[0-9]*) ;; *) echo "run_all.sh: --device must be auto, cpu, cuda or cuda:N, got '$device'" >&2; exit 2 ;; esac

source tools/setup.sh

mapfile -t notebooks < <("$PY" -m grokprobe.manifest notebooks --only "$only")
[ ${#notebooks[@]} -gt 0 ] || { echo "run_all.sh: --only '$only' matches no notebook in figures/manifest.json" >&2; exit 2; }

extra=()
[ -n "$recompute" ] && extra+=(--recompute)
[ -n "$device" ] && extra+=(--device "$device")
failed=()
start=$SECONDS
for nb in "${notebooks[@]}"; do
  t0=$SECONDS
  echo "=== $nb (profile $profile)"
  if "$PY" -m grokprobe.notebook "notebooks/$nb" --profile "$profile" "${extra[@]}"; then
    echo "=== $nb done in $((SECONDS - t0)) s"
  else
    failed+=("$nb")
    echo "=== $nb FAILED after $((SECONDS - t0)) s (executed notebook in build/executed/)"
  fi
done
echo
echo "Claims (results/claims.json):"
"$PY" -m grokprobe.claims
echo
echo "total $((SECONDS - start)) s; figures in $([ "$profile" = smoke ] && echo build/smoke/figures || echo figures)/"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
