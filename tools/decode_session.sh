#!/usr/bin/env bash
# GPU machine, ONE device call (carry [".device"]): Denali's decode benchmark, then the HF
# transformers baselines (eager generate; static cache + torch.compile) in the same run, then a
# table of ratios from this run only. Logs under $OUT:
#   decode_denali.log, decode_hf.log, decode_summary.txt
#   bash tools/decode_session.sh            # batches 1,8,64,256, context 512
# Environment knobs: BATCHES (1,8,64,256), COMPILED_BATCHES (= BATCHES), CONTEXT (512),
# BUDGET_S (560: the whole script stays inside a 10-minute device call), DENALI_LIMIT_S (240).
# Expected wall time on an H100: Denali about 1-2 min, HF about 5 min (model build and eager
# about 1.5 min, compiled about 3 min, most of it compilation); anything that would pass the
# budget is skipped with a SKIP line instead of being cut off.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/denali-out}"
mkdir -p "$OUT"
BATCHES="${BATCHES:-1,8,64,256}"
COMPILED_BATCHES="${COMPILED_BATCHES:-$BATCHES}"
CONTEXT="${CONTEXT:-512}"
BUDGET_S="${BUDGET_S:-560}"
DENALI_LIMIT_S="${DENALI_LIMIT_S:-240}"
started=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - started))); }

{
  echo "=== decode session $(date -u +%FT%TZ), batches $BATCHES, context $CONTEXT"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader \
    2>/dev/null || true
} | tee "$OUT/decode_summary.txt"

echo "=== denali (limit ${DENALI_LIMIT_S} s)"
timeout -k 10 "$DENALI_LIMIT_S" bash .device/gpu.sh deno run -A bench/decode_bench.ts --presets llama3-8b \
  --batches "$BATCHES" --context "$CONTEXT" --steps 64 2>&1 | tee "$OUT/decode_denali.log"
echo "denali rc=${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$OUT/decode_denali.log"

# decode_hf.py skips (SKIP lines) what it estimates would pass its deadline; the timeout is the
# backstop that still leaves time for the summary.
hf_limit=$(($(left) - 10))
echo "=== hf transformers (limit ${hf_limit} s)"
if [ "$hf_limit" -gt 60 ]; then
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 timeout -k 10 "$hf_limit" \
    python3 bench/decode_hf.py --batches "$BATCHES" --compiled-batches "$COMPILED_BATCHES" \
    --context "$CONTEXT" --deadline-s $((hf_limit - 15)) 2>&1 | tee "$OUT/decode_hf.log"
  echo "hf rc=${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$OUT/decode_hf.log"
else
  echo "SKIP hf: only ${hf_limit} s left" | tee "$OUT/decode_hf.log"
fi

python3 - "$OUT/decode_denali.log" "$OUT/decode_hf.log" <<'EOF' | tee -a "$OUT/decode_summary.txt"
import re
import sys

rows = {}  # (name, batch) -> {key: value}
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        if line.startswith("DECODE "):
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            rows[(line.split()[1], int(fields["batch"]))] = fields

def ms(name, batch, key="ms_per_step"):
    try:
        return float(rows[(name, batch)][key])
    except (KeyError, ValueError):
        return None

def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"

def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b

floor = ms("floor", 1)
batches = sorted({b for (name, b) in rows if name != "floor"})
print("=== summary (all from this run; ms per decode step; ratios use ms_per_step, the")
print("    t(N2)-t(N1) method; stamp = median gap between steps, the cross-check)")
print(f"bandwidth floor (weights / measured copy bandwidth): {fmt(floor)} ms")
head = ("batch", "denali", "den/floor", "hf_eager", "eager/den", "eager_stamp", "eager_cold",
        "hf_compiled", "comp/den", "comp_stamp")
print("| " + " | ".join(head) + " |")
print("|" + "---:|" * len(head))
for b in batches:
    d = ms("denali", b)
    e, c = ms("hf_eager", b), ms("hf_compiled", b)
    cells = (str(b), fmt(d), fmt(ratio(d, floor)), fmt(e), fmt(ratio(e, d), 2),
             fmt(ms("hf_eager", b, "stamp_ms")), fmt(ms("hf_eager", b, "cold_stamp_ms")),
             fmt(c), fmt(ratio(c, d), 2), fmt(ms("hf_compiled", b, "stamp_ms")))
    print("| " + " | ".join(cells) + " |")
for name in ("hf_eager", "hf_compiled"):
    for b in batches:
        a, s = ms(name, b), ms(name, b, "stamp_ms")
        if a is not None and s is not None and abs(a - s) > 0.1 * s:
            print(f"NOTE {name} batch={b}: the two methods differ by more than 10% "
                  f"({a:.3f} vs {s:.3f} ms); see t_n1_s / t_n2_s in decode_hf.log")

def verdict(ok):
    return "-" if ok is None else ("met" if ok else "NOT met")

r1 = ratio(ms("denali", 1), floor)
print(f"target batch 1 <= 1.15x floor: {fmt(r1)}x -> {verdict(None if r1 is None else r1 <= 1.15)}")
for b in batches:
    e = ratio(ms("hf_eager", b), ms("denali", b))
    c = ratio(ms("hf_compiled", b), ms("denali", b))
    print(f"target batch {b}: >= 10x faster than HF eager: {fmt(e, 2)}x -> "
          f"{verdict(None if e is None else e >= 10)}; faster than HF compiled: {fmt(c, 2)}x -> "
          f"{verdict(None if c is None else c > 1)}")
EOF
for log in "$OUT/decode_denali.log" "$OUT/decode_hf.log"; do
  grep -hE "^(SKIP|DIAG)|Error|error:" "$log" | head -20
done
echo "session wall: $((SECONDS - started)) s"
