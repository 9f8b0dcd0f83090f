#!/usr/bin/env bash
# Glimpse vs faiss IVF-PQ8 + refine on one quiet machine, back to back, same data and queries,
# on a finer grid than faiss_compare.sh (see docs/benchmarks.md, "Quiet 16-core machine").
#
#   N=200000 QUERIES=1000 SETTINGS=8:10,10:10 NPROBES=6,8,10 KFS=8,10 \
#       benches/device/index_vs_faiss.sh [BIN_DIR]
#
# VECTORS=mapped|heap|both says where index_bench keeps the raw vectors (default mapped, as the
# storage engine serves them); SKIP_FAISS=1 runs Glimpse alone (for ours/faiss/ours sequences).
# Needs `index_bench` in BIN_DIR (default .devcarry) and faiss importable (on a lent machine:
# the faiss-cpu wheel from .whl/, installed by this script). Appends to $OUT/index_vs_faiss.log.
set -uo pipefail
BIN=${1:-.devcarry}
OUT=${OUT:-/tmp/index-out}
N=${N:-200000}
QUERIES=${QUERIES:-1000}
SETTINGS=${SETTINGS:-8:10,8:12,10:10,12:10,16:10}
NPROBES=${NPROBES:-6,8,10,12,16}
KFS=${KFS:-6,8,10,12}
VECTORS=${VECTORS:-mapped}
SKIP_FAISS=${SKIP_FAISS:-0}
DATA=/tmp/index-vs-faiss-$N
mkdir -p "$OUT" "$DATA"
chmod +x "$BIN/index_bench" 2>/dev/null
if ! python3 -c "import faiss" 2>/dev/null && ls .whl/faiss_cpu-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/faiss_cpu-*.whl 2>/dev/null
    export PYTHONPATH=/tmp/site
fi
{
    echo "## N=$N: Glimpse (GLIMPSE_SIMD=${GLIMPSE_SIMD:-detected}, vectors $VECTORS), settings $SETTINGS"
    "$BIN/index_bench" --n "$N" --queries "$QUERIES" --exact-queries 2 --settings "$SETTINGS" \
        --vectors "$VECTORS" --out "$DATA" 2>&1 | grep -vE "^wrote"
    [ "$SKIP_FAISS" = 1 ] && exit 0
    echo "## N=$N: faiss IVF-PQ8 + refine, nprobe $NPROBES x k_factor $KFS"
    PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE python3 benches/faiss_bench.py "$DATA" \
        --skip-hnsw --skip-fastscan --nprobes "$NPROBES" --k-factors "$KFS" 2>&1 \
        | grep -vE "^glimpse IVF-PQ|^  faiss"
} 2>&1 | tee -a "$OUT/index_vs_faiss.log"
rm -rf "$DATA"
