#!/usr/bin/env bash
# The 10-minute GPU soak (issue 14) across two device calls, since one command may run 600 s and
# the soak with its load takes longer (device tool, carry [".device"], the second call within
# the machine's idle window of the first):
#   bash tools/soak_gpu_session.sh start     # starts the soak detached, watches it for 570 s
#   bash tools/soak_gpu_session.sh collect   # waits for it to end (≤ 570 s), $OUT/soak.log
# The soak keeps running between the calls because the machine is held while warm; if the second
# call lands on a fresh machine, the log says so and the run must start again.
source "$(dirname "$0")/device_env.sh"
log=/tmp/denali-soak.log
case "${1:-}" in
  start)
    rm -f "$log" /tmp/denali-soak.rc
    setsid nohup bash -c "bash .device/gpu.sh deno run -A --no-check bench/soak.ts --gpu --minutes 10 \
      >$log 2>&1; echo \$? >/tmp/denali-soak.rc" >/dev/null 2>&1 &
    sleep "${WATCH_S:-570}"
    tail -5 "$log"
    ;;
  collect)
    if [ ! -f "$log" ]; then
      echo "no soak log on this machine: it is a fresh one; run 'start' again" | tee "$OUT/soak.log"
      exit 1
    fi
    for _ in $(seq 1 570); do [ -f /tmp/denali-soak.rc ] && break; sleep 1; done
    cp "$log" "$OUT/soak.log"
    echo "exit: $(cat /tmp/denali-soak.rc 2>/dev/null || echo 'still running')" | tee -a "$OUT/soak.log"
    grep -E "^(SOAK|TARGET)" "$log"
    ;;
  *)
    echo "usage: bash tools/soak_gpu_session.sh start|collect" >&2
    exit 2
    ;;
esac
