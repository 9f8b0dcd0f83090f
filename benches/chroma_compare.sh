#!/usr/bin/env bash
# Glimpse vs ChromaDB on the same synthetic CLIP-like data, side by side.
#
# Usage: benches/chroma_compare.sh [N] [extra chroma_compare.py flags...]
#   N defaults to 200000 (d = 512, 1000 queries, k = 10). Results go to
#   bench-out/chroma-N/ (results.json, chroma.json, glimpse.json, table on stdout).
#
# Environment:
#   GLIMPSE_BIN   use this glimpse binary instead of building it
#                 (cargo build --release -p glimpse-server --bin glimpse)
#   SYSTEMS       chroma,glimpse (default) | chroma | glimpse
#   DATA=numpy    generate the data with numpy instead of the Rust generator
#                 (synth_dump = glimpse_index::synthetic, seed 2024: the same data
#                 as benches/faiss_compare.sh)
#   CARGO_TARGET_DIR  where the Rust binaries are built (default target)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200000}"
shift || true
OUT="bench-out/chroma-$N"
VENV=/work/main/.venv-chroma
SYSTEMS="${SYSTEMS:-chroma,glimpse}"
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import chromadb, numpy, pyarrow, requests, psutil' 2>/dev/null ||
    "$VENV/bin/pip" install -q chromadb numpy pyarrow requests psutil

EXTRA=()
if [[ "$SYSTEMS" == *glimpse* ]]; then
    if [ -z "${GLIMPSE_BIN:-}" ]; then
        cargo build --release -p glimpse-server --bin glimpse
        GLIMPSE_BIN="$TARGET/release/glimpse"
    fi
    EXTRA+=(--glimpse-bin "$GLIMPSE_BIN")
fi

# loadgen (concurrent search, with/without bulk-load) and synth_dump (data).
if [ -z "${LOADGEN_BIN:-}" ] || [ "${DATA:-rust}" != numpy ]; then
    cargo build --release -p glimpse-benches --bin loadgen --bin synth_dump
fi
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET/release/loadgen}"
[[ "$SYSTEMS" == *glimpse* ]] && EXTRA+=(--loadgen-bin "$LOADGEN_BIN")

if [ "${DATA:-rust}" != numpy ]; then
    NPY="$OUT/npy"
    if [ ! -f "$NPY/base.npy" ] || [ ! -f "$NPY/queries.npy" ]; then
        "$TARGET/release/synth_dump" --n "$N" --dim 512 --queries 1000 --out "$NPY"
    fi
    EXTRA+=(--from-npy "$NPY")
fi

"$VENV/bin/python" benches/chroma_compare.py --n "$N" --out "$OUT" --systems "$SYSTEMS" \
    "${EXTRA[@]}" "$@" | tee "$OUT/report-$(date -u +%Y%m%dT%H%M%SZ).txt"
