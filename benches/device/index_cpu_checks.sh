#!/usr/bin/env bash
# Index checks on a lent machine's CPU (see docs/benchmarks.md, "AVX-512"): the 2-core
# development VM has no AVX-512, so the AVX-512 kernels are tested and measured here.
#
# Needs, in $1 (default .devcarry): `index_unit` and `index_ivfpq` (the index crate's test
# binaries, `cargo test -p glimpse-index --no-run`), `index_bench` and `scan_kernel_bench`
# (release); optionally the faiss-cpu wheel in .whl/ for the side-by-side run. The log goes to
# $OUT/index_checks.log (OUT defaults to /tmp/index-out). Steps:
#   1. CPU model and AVX-512 flags;
#   2. the index tests (every kernel against the scalar one, search, serialisation, recall);
#   3. scan_kernel_bench: scalar vs AVX2 vs AVX-512 fast-scan kernels alone;
#   4. index_bench at N = 200k with GLIMPSE_SIMD=avx2 and =avx512, faiss in between
#      (back to back, same data and queries), then both levels again.
set -uo pipefail
BIN=${1:-.devcarry}
OUT=${OUT:-/tmp/index-out}
N=${N:-200000}
SETTINGS=${SETTINGS:-8:10,8:12,16:10,24:10,16:20}
mkdir -p "$OUT"
for b in "$BIN"/*; do [ -f "$b" ] && chmod +x "$b"; done
main() {
{
    grep -m1 "model name" /proc/cpuinfo
    echo "cores: $(nproc)"
    echo "flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512vnni|avx_vnni)$' | tr '\n' ' ')"
}

echo "## index tests (default level: the best this CPU has)"
"$BIN/index_unit" 2>&1 | tail -3
"$BIN/index_ivfpq" 2>&1 | tail -3
echo "## index tests again with GLIMPSE_SIMD=avx2"
GLIMPSE_SIMD=avx2 "$BIN/index_ivfpq" 2>&1 | tail -2

echo "## scan kernels alone"
"$BIN/scan_kernel_bench" 2>&1
"$BIN/scan_kernel_bench" --vectors 262144 --passes 20 2>&1 | tail -3

run_ours() {
    echo "## index_bench GLIMPSE_SIMD=$1 ($2)"
    GLIMPSE_SIMD=$1 "$BIN/index_bench" --n "$N" --queries 1000 --exact-queries 5 \
        --settings "$SETTINGS" ${3:+--out "$3"} 2>&1
}
run_ours avx512 run1 /tmp/index-data
run_ours avx2 run1
if ls .whl/faiss_cpu-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/faiss_cpu-*.whl && export PYTHONPATH=/tmp/site
    echo "## faiss (same data and queries)"
    PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE python3 benches/faiss_bench.py /tmp/index-data \
        ${FAISS_ARGS:-} 2>&1
fi
run_ours avx2 run2
run_ours avx512 run2
}
main 2>&1 | tee "$OUT/index_checks.log"
