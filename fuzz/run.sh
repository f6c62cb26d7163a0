#!/usr/bin/env bash
# Fuzz the pure core of sticky-canary with cargo-fuzz (libFuzzer). Nightly Rust; not part of CI.
#
#   fuzz/run.sh                      every target, 10 000 000 executions each, one after another
#   fuzz/run.sh -r 1000000 json      one target, a million executions
#   fuzz/run.sh -t 300               every target, 5 minutes each
#   fuzz/run.sh --update-corpus      after fuzzing: minimize each working corpus (cargo fuzz cmin)
#                                    and rewrite fuzz/corpus/<target>/ with at most 20 inputs,
#                                    chosen greedily for coverage
#
# Targets run one at a time, single-process (-jobs=1 -workers=1) and under `nice`, so the machine
# stays usable. Each target starts from its committed seeds (fuzz/corpus/<target>/) plus its
# working corpus (fuzz/work/<target>/, not committed), which grows across runs. A crash stops that
# target, leaves the input in fuzz/artifacts/<target>/ and makes the script exit non-zero after
# the remaining targets have run; reproduce with `cargo +nightly fuzz run -s none <target> <file>`.
#
# Environment: FUZZ_SANITIZER (default none: the core is safe Rust without `unsafe`; `address`
# for ASan), FUZZ_NICE (default 10), FUZZ_ARGS (extra libFuzzer flags), FUZZ_MAX_SEEDS (20).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs=10000000
seconds=""
update_corpus=false
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--runs) runs="$2"; seconds=""; shift 2 ;;
    -t|--seconds) seconds="$2"; shift 2 ;;
    --update-corpus) update_corpus=true; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see $0 --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

sanitizer="${FUZZ_SANITIZER:-none}"
niceness="${FUZZ_NICE:-10}"
max_seeds="${FUZZ_MAX_SEEDS:-20}"
read -r -a extra <<< "${FUZZ_ARGS:-}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# fuzz SUBCOMMAND ARGS...: cargo fuzz under nice, on this fuzz project (options before any `--`).
fuzz() { local sub="$1"; shift; nice -n "$niceness" cargo +nightly fuzz "$sub" --fuzz-dir "$here" "$@"; }

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$here")
fi

# Builds once (all targets), so the timings below are fuzzing only.
fuzz build -s "$sanitizer"

if $update_corpus; then
  for t in "${targets[@]}"; do
    work="$here/work/$t"
    mkdir -p "$work" "$here/corpus/$t"
    cp -n "$here/corpus/$t"/* "$work"/ 2>/dev/null || true
    echo "== $t: cmin over $(find "$work" -type f | wc -l) inputs"
    fuzz cmin -s "$sanitizer" "$t" "$work" -- -jobs=0 >/dev/null 2>&1
    # Per-input features from a merge control file, then a greedy cover of at most $max_seeds.
    bin="$here/target/x86_64-unknown-linux-gnu/release/$t"
    scratch="$(mktemp -d)"
    (cd "$scratch" && mkdir out && "$bin" -merge=1 -merge_control_file="$scratch/control" out "$work" >/dev/null 2>&1) || true
    counters=$("$bin" -runs=0 "$scratch/out" 2>&1 | grep -oE '[0-9]+ inline 8-bit counters' | grep -oE '^[0-9]+' | head -n 1)
    python3 - "$scratch/control" "$max_seeds" "$here/corpus/$t" "${counters:-0}" <<'PY'
import os, shutil, sys
control, limit, dest, counters = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
lines = open(control).read().split("\n")
n = int(lines[0]); files = lines[2:2 + n]
# FT lines hold each input's features; COV lines only the edges an input was first to reach, so
# they are not used. The first 8 × counters features are edges × hit-count buckets.
ft = {}
for line in lines[2 + n:]:
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "FT":
        ft.setdefault(int(parts[1]), set()).update(map(int, parts[2:]))
edges = {i: {f // 8 for f in fs if f < 8 * counters} for i, fs in ft.items()}
total = set().union(*ft.values()) if ft else set()
total_edges = set().union(*edges.values()) if edges else set()
# Greedy: most new edges, then most new features, then the smaller file.
chosen, covered, covered_edges = [], set(), set()
while len(chosen) < limit and ft:
    gain = lambda i: (len(edges[i] - covered_edges), len(ft[i] - covered), -os.path.getsize(files[i]))
    best = max(ft, key=gain)
    if gain(best)[:2] == (0, 0):
        break
    chosen.append(best)
    covered |= ft.pop(best)
    covered_edges |= edges[best]
for f in os.listdir(dest):
    os.remove(os.path.join(dest, f))
for i in chosen:
    shutil.copy(files[i], os.path.join(dest, os.path.basename(files[i])))
print(f"   kept {len(chosen)} of {n} inputs: {len(covered_edges)} of {len(total_edges)} edges, {len(covered)} of {len(total)} features")
PY
    rm -rf "$scratch"
    edges() { "$bin" -runs=0 "$@" 2>&1 | grep -oE 'INITED cov: [0-9]+' | grep -oE '[0-9]+$'; }
    echo "   edges: $(edges "$here/corpus/$t") from the kept seeds, $(edges "$work") from the working corpus"
  done
  exit 0
fi

failed=()
for t in "${targets[@]}"; do
  work="$here/work/$t"
  logs="$here/work/logs/$t"
  mkdir -p "$work" "$logs" "$here/corpus/$t"
  args=(-jobs=1 -workers=1 -print_final_stats=1)
  if [ -n "$seconds" ]; then args+=(-max_total_time="$seconds"); else args+=(-runs="$runs"); fi
  [ -f "$here/dicts/$t.dict" ] && args+=(-dict="$here/dicts/$t.dict")
  echo "== $t: ${seconds:+$seconds s}${seconds:-$runs runs}"
  start=$(date +%s)
  # -jobs=1 runs one worker process that logs to fuzz-0.log in the current directory.
  if (cd "$logs" && fuzz run -s "$sanitizer" "$t" "$work" "$here/corpus/$t" -- "${args[@]}" ${extra[@]+"${extra[@]}"} >/dev/null 2>&1) \
     && ! grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer)|panicked at' "$logs/fuzz-0.log"; then
    status=ok
  else
    status=FAILED; failed+=("$t")
  fi
  elapsed=$(( $(date +%s) - start ))
  log="$logs/fuzz-0.log"
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  echo "   $status in ${elapsed}s: executions=$execs exec/s=$rate $(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]+' <<< "$last" || true)"
  if [ "$status" != ok ]; then
    grep -E 'panicked at|^thread|assertion|SUMMARY|Test unit written' -A3 "$log" | head -n 30 | sed 's/^/   | /'
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]} (inputs in $here/artifacts/)" >&2
  exit 1
fi
