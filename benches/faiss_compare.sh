#!/usr/bin/env bash
# Glimpse IVF-PQ vs faiss on the same synthetic CLIP-like data.
#
# Usage: benches/faiss_compare.sh [N] [extra index_bench flags...]
#   N defaults to 200000; d = 512. Results go to bench-out/index-N/.
# Builds index_bench in release, runs it (dumping data + our results), then
# runs faiss (IVF-PQ+refine, IVF-PQ 4-bit fast scan+refine, HNSW32) on the
# same files with single-threaded search and prints a side-by-side table.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200000}"
shift || true
OUT="bench-out/index-$N"
VENV=/work/main/.venv-faiss
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import faiss, numpy' 2>/dev/null || "$VENV/bin/pip" install -q faiss-cpu numpy

cargo build --release -p glimpse-benches --bin index_bench
BIN="${CARGO_TARGET_DIR:-target}/release/index_bench"
"$BIN" --n "$N" --dim 512 --queries 1000 --out "$OUT" "$@" | tee "$OUT/glimpse.txt"
# Passive OpenMP waiting: spinning threads distort timings on a shared box.
OMP_WAIT_POLICY=PASSIVE "$VENV/bin/python" benches/faiss_bench.py "$OUT" ${SKIP_HNSW:+--skip-hnsw} ${SKIP_PQ8:+--skip-pq8} | tee "$OUT/faiss.txt"
