#!/usr/bin/env bash
# bench/compare.sh — `ftk bench` and the PyTorch peer (torch_lora_bench.py) side by side: the same
# LoRA SFT step (synthetic weights, batch 4 x 256, r 8 alpha 16 on q,v, fp32, AdamW), run
# alternately ftk, torch, ftk, torch ... for every (model, threads, mask fraction), then a ratio
# table from the medians over the rounds. The machine is shared: only ratios measured in the same
# run mean anything; the table says how much CPU others took while each side ran.
#
# Usage: bench/compare.sh [path/to/ftk]        (default: build-bench/ftk, else build/ftk)
#        bench/compare.sh --table DIR           the tables again from DIR/results.jsonl
# Environment (defaults in brackets):
#   MODELS ["gpt2 llama"]  THREADS ["1 2"]  MASKS ["0 0.5"]  ROUNDS [2]  STEPS [3]  WARMUP [1]
#   TOOLS ["ftk torch"]  (one of them alone for a quick check)
#   CORETYPE [the environment's OPENBLAS_CORETYPE]  exported as OPENBLAS_CORETYPE to both sides;
#                     "auto" unsets it (OpenBLAS then detects the CPU itself: Cooperlake, AVX-512,
#                     on the development machine, whose environment pins Haswell, AVX2)
#   QUIET_WAIT [5]  seconds each side waits for an idle machine before a timed step
#   MAX_FOREIGN [99] drop steps disturbed by more than (idle cores + this) foreign cores (99 = keep all)
#   PEER [/work/shared/bench/torch_lora_bench.py]  PYTHON [/usr/bin/python3]
#   OUT [out/bench-<date>]  logs, results.jsonl, table.md (out/ is git-ignored)
# Decode (ftk only) is timed in the ftk runs with mask 0: batch 1 and 8, KV cache, against the
# memory-bandwidth bound measured in the same run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
PYTHON=${PYTHON:-/usr/bin/python3}
TABLE_ONLY=
if [[ "${1:-}" == --table ]]; then
  [[ -f "${2:-}/results.jsonl" ]] || { echo "compare.sh: no ${2:-DIR}/results.jsonl" >&2; exit 2; }
  TABLE_ONLY=1
  OUT=$2
fi
FTK=${1:-}
[[ -n "$TABLE_ONLY" ]] && FTK=/bin/true
if [[ -z "$FTK" ]]; then
  for c in "$repo/build-bench/ftk" "$repo/build/ftk"; do [[ -x "$c" ]] && FTK=$c && break; done
fi
[[ -n "$FTK" && -x "$FTK" ]] || { echo "compare.sh: no ftk binary (give its path)" >&2; exit 2; }
PEER=${PEER:-/work/shared/bench/torch_lora_bench.py}
[[ -f "$PEER" ]] || { echo "compare.sh: peer $PEER not found" >&2; exit 2; }
MODELS=${MODELS:-"gpt2 llama"}
THREADS=${THREADS:-"1 2"}
MASKS=${MASKS:-"0 0.5"}
TOOLS=${TOOLS:-"ftk torch"}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
QUIET_WAIT=${QUIET_WAIT:-5}
MAX_FOREIGN=${MAX_FOREIGN:-99}
if [[ "${CORETYPE:-}" == auto ]]; then unset OPENBLAS_CORETYPE; elif [[ -n "${CORETYPE:-}" ]]; then export OPENBLAS_CORETYPE=$CORETYPE; fi
OUT=${OUT:-"$repo/out/bench-$(date +%Y%m%d-%H%M%S)"}
results="$OUT/results.jsonl"
if [[ -z "$TABLE_ONLY" ]]; then
mkdir -p "$OUT"
: >"$results"

# machine facts
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs online), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
  echo "openblas: $(dpkg-query -W -f='${Package} ${Version}' libopenblas0-pthread 2>/dev/null || echo '?')"
  echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-(unset)}  OPENBLAS_L2_SIZE: ${OPENBLAS_L2_SIZE:-(unset)}"
  echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')"
  echo "ftk: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($FTK)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

# Runs one side, keeps its log, appends its RESULT line (tagged) to results.jsonl.
run_one() {
  local tool=$1 model=$2 threads=$3 mask=$4 round=$5
  local log="$OUT/${tool}-${model}-t${threads}-m${mask}-r${round}.log"
  local common=(--steps "$STEPS" --warmup "$WARMUP" --threads "$threads" --mask-fraction "$mask"
                --quiet-wait "$QUIET_WAIT" --max-foreign "$MAX_FOREIGN")
  local t0=$SECONDS
  if [[ $tool == ftk ]]; then
    local dec=(--no-decode)
    [[ $mask == 0 ]] && dec=(--decode-batch 1,8 --decode-tokens 16 --decode-prompt 32)
    "$FTK" bench --model "$model" "${common[@]}" "${dec[@]}" --save-params "$OUT/params-t${threads}-m${mask}-r${round}-" \
      >"$log" 2>&1 || { echo "ftk failed: $log" >&2; return 1; }
  else
    "$PYTHON" "$PEER" --model "$model" "${common[@]}" >"$log" 2>&1 || { echo "torch failed: $log" >&2; return 1; }
  fi
  local line
  line=$(sed -n 's/^RESULT //p' "$log" | tail -1)
  [[ -n "$line" ]] || { echo "no RESULT line in $log" >&2; return 1; }
  # the peer's RESULT has no "tool"; its NaN values are not JSON, so re-encode through python
  # and the mean CPU load of other processes over the timed steps, from the step lines of the log
  "$PYTHON" - "$tool" "$round" "$line" "$log" >>"$results" <<'EOF'
import json, re, statistics, sys
tool, rnd, line, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
d = json.loads(line.replace("NaN", "null"))
d["tool"], d["round"] = tool, rnd
fg = [float(m.group(1)) for m in (re.match(r"\s+(?:step|DROPPED) \d+:.*foreign ([\d.]+) cores", l) for l in open(log)) if m]
d["foreign_steps"] = statistics.mean(fg) if fg else None
print(json.dumps(d))
EOF
  printf '  %-5s %-5s t=%s mask=%-3s round %s: %8.1f tok/s  (%3ds)\n' "$tool" "$model" "$threads" "$mask" "$round" \
    "$("$PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["tok_s"])' "$line")" $((SECONDS - t0))
}

for model in $MODELS; do
  for threads in $THREADS; do
    for mask in $MASKS; do
      for ((r = 1; r <= ROUNDS; r++)); do
        for tool in $TOOLS; do run_one "$tool" "$model" "$threads" "$mask" "$r"; done
      done
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

fi

# ratio table (medians over rounds)
"$PYTHON" - "$results" <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(d): return (d["model"], d["threads"], float(d["mask_fraction"]))
def med(v): return statistics.median(v) if v else float("nan")
keys = sorted({key(d) for d in rows}, key=lambda k: (k[0], k[1], k[2]))
print("| model | threads | mask | ftk tok/s | torch tok/s | **tok/s ftk/torch** | ftk % of sgemm peak: step / products (peak before+after) | same, peak beside each step | ftk RSS MiB | torch RSS MiB | **RSS ftk/torch** | foreign cores ftk / torch | rounds |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    f = [d for d in rows if key(d) == k and d["tool"] == "ftk"]
    t = [d for d in rows if key(d) == k and d["tool"] == "torch"]
    ft, tt = med([d["tok_s"] for d in f]), med([d["tok_s"] for d in t])
    fr, tr = med([d["peak_rss_mb"] for d in f]), med([d["peak_rss_mb"] for d in t])
    ratio = lambda a, b: a / b if b == b and b else float("nan")
    pk = med([100 * d["peak_fraction"] for d in f])
    pg = med([100 * d["par_sgemm_fraction"] for d in f if d.get("par_sgemm_fraction") is not None])
    bk = med([100 * d["peak_fraction_beside"] for d in f if d.get("peak_fraction_beside") is not None])
    bg = med([100 * d["par_sgemm_fraction_beside"] for d in f if d.get("par_sgemm_fraction_beside") is not None])
    ff = med([d["foreign_steps"] for d in f if d.get("foreign_steps") is not None])
    tf = med([d["foreign_steps"] for d in t if d.get("foreign_steps") is not None])
    print(f"| {k[0]} | {k[1]} | {k[2]:g} | {ft:.1f} | {tt:.1f} | **{ratio(ft, tt):.2f}** | {pk:.0f}% / {pg:.0f}% | {bk:.0f}% / {bg:.0f}% | {fr:.0f} | {tr:.0f} | **{ratio(fr, tr):.2f}** | {ff:.2f} / {tf:.2f} | {len(f)}/{len(t)} |")
print()
print("| model | threads | decode batch | ftk tok/s | bandwidth bound tok/s | time / bound time |")
print("|---|---|---|---|---|---|")
dec = {}
for d in rows:
    if d["tool"] != "ftk": continue
    for x in d.get("decode", []):
        dec.setdefault((d["model"], d["threads"], x["batch"]), []).append((x["tok_s"], x["bound_tok_s"]))
for k in sorted(dec):
    a = med([v[0] for v in dec[k]]); b = med([v[1] for v in dec[k]])
    print(f"| {k[0]} | {k[1]} | {k[2]} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
print()
print("Determinism: ftk adapters after the same steps at 1 and 2 threads (same round):")
import array, os
out = os.path.dirname(sys.argv[1])
def load(t, m, mk, r):
    p = os.path.join(out, f"params-t{t}-m{mk}-r{r}-{m}.f32")
    if not os.path.exists(p): return None
    a = array.array("f"); a.frombytes(open(p, "rb").read()); return a
seen = set()
for d in rows:
    if d["tool"] != "ftk": continue
    m, mk, r = d["model"], d["mask_fraction"], d["round"]
    if (m, mk, r) in seen: continue
    seen.add((m, mk, r))
    mk_s = f"{float(mk):g}"
    a, b = load(1, m, mk_s, r), load(2, m, mk_s, r)
    if a is None or b is None or len(a) != len(b): continue
    h = {x["threads"]: x for x in rows if x["tool"] == "ftk" and x["model"] == m and x["mask_fraction"] == mk and x["round"] == r}
    if h[1].get("steps_run") != h[2].get("steps_run"): continue
    diff = max(abs(x - y) for x, y in zip(a, b)); scale = max(abs(x) for x in a)
    same = sum(1 for x, y in zip(a, b) if x == y)
    dl = abs(h[1]["final_loss"] - h[2]["final_loss"])
    print(f"  {m} mask {float(mk):g} round {r} ({h[1]['steps_run']} steps): max |p1 - p2| = {diff:.3g} "
          f"(max |p| {scale:.3g}, relative {diff / scale:.2g}); {same}/{len(a)} values bit-identical; "
          f"last loss differs by {dl:.2g}")
EOF
echo "logs and results: $OUT"
