#!/usr/bin/env bash
# Issue 17's side-by-side run [H2] (docs/benchmarks.md, "Recall targets"): Glimpse at its recall
# targets (each index's own calibration) and on a grid, against faiss's IVF-PQ4fs + refine,
# IVF-RaBitQ(+fs) + refine and HNSW32 on grids as fine, on clip_like and the hard mixture, with
# shifted and in-distribution queries, 200k x 512, one thread; then the compact-tier / evicted
# vectors runs [E1]. Glimpse runs before and after faiss (glimpse.txt, glimpse-after.txt).
# Needs a release build of index_bench and faiss-cpu in $PY's environment.
#   BIN=target/release/index_bench PY=python3 OUT_ROOT=bench-out/recall benches/recall_vs_faiss.sh
set -euo pipefail
BIN=${BIN:-target/release/index_bench}
PY=${PY:-python3}
OUT_ROOT=${OUT_ROOT:-bench-out/recall}
N=${N:-200000}
FAISS="$(dirname "$0")/faiss_bench.py"
GRID=8:10,16:10,32:20,64:16,64:24,64:64,128:32,256:48,384:64
mkdir -p "$OUT_ROOT"
for case in "clip 0.6" "clip 0" "hard 0.6" "hard 0"; do
  set -- $case
  OUT="$OUT_ROOT/out-$1-shift$2"
  mkdir -p "$OUT"
  "$BIN" --n "$N" --dim 512 --queries 1000 --data "$1" --query-shift "$2" --settings "$GRID" --out "$OUT" > "$OUT/glimpse.txt" 2>&1
  if [ "$1" = clip ]; then
    NP=4,6,8,12,16,24,32,48,64,96; KF=2,4,6,8,10,16,24,32,48; EF=16,32,48,64,96,128,256,512
  else
    NP=16,32,48,64,96,128,192,256,384; KF=10,20,32,48,64,96,128; EF=64,128,256,512,1024
  fi
  OMP_WAIT_POLICY=PASSIVE "$PY" "$FAISS" "$OUT" --skip-pq8 --nprobes "$NP" --k-factors "$KF" --efs "$EF" > "$OUT/faiss.txt" 2>&1
  # Glimpse again on the same data after faiss: a shared VM's speed drifts by tens of percent
  # within minutes, so a ratio is quoted against both of Glimpse's runs (H11).
  "$BIN" --n "$N" --dim 512 --queries 1000 --data "$1" --query-shift "$2" --settings "$GRID" --out "$OUT/again" > "$OUT/glimpse-after.txt" 2>&1
  rm -f "$OUT/base.npy" "$OUT/again/base.npy"
  echo "done $case $(date +%T)"
done
for d in clip hard; do
  "$BIN" --n "$N" --dim 512 --queries 1000 --data "$d" --tiers both --evict 1 --targets 0.95 --settings 64:64 > "$OUT_ROOT/evict-$d.txt" 2>&1
  echo "done evict $d $(date +%T)"
done
