# Progress lines for the long steps of the set-up scripts (sourced, not run).
# step "WHAT (roughly HOW LONG)" COMMAND...: one line on stderr before COMMAND, a line with the
# elapsed time every minute while it runs (pip and the compilers print nothing meanwhile), and
# one line with its time when it ends. COMMAND's own status is returned.
step() {
  local what=$1 start=$SECONDS status=0 ticker
  shift
  echo "==> $what" >&2
  (
    while sleep 60 && kill -0 $$ 2>/dev/null; do  # ends with the script, however it ends
      echo "    ... still running, $(((SECONDS - start) / 60)) min so far" >&2
    done
  ) &
  ticker=$!
  "$@" || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  local took=$((SECONDS - start))
  if [ "$status" = 0 ]; then
    echo "    done in $((took / 60)) min $((took % 60)) s" >&2
  else
    echo "    FAILED after $((took / 60)) min $((took % 60)) s (exit $status)" >&2
  fi
  return "$status"
}
