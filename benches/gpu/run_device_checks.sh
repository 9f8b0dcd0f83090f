#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, in one call (see docs/benchmarks.md, "GPU").
#
# Needs binaries built elsewhere with `--features cuda` (see benches/gpu/build_cuda.sh) in
# $1 (default .devcarry): embed_bench, embed_pipeline_bench and the embedder's `reference`
# test binary. Logs go to $OUT (or /tmp/gpu-out).
set -uo pipefail
BIN=${1:-.devcarry}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

# The binaries link CUDA 13's cuBLAS, cuRAND, NVRTC and runtime: use the machine's copies.
LIBDIRS=$(find /usr /opt -xdev \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' \
    -o -name 'libcurand.so.10' -o -name 'libnvrtc.so.13' -o -name 'libcudart.so.13' \) \
    -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$LIBDIRS:${LD_LIBRARY_PATH:-}"
# Binaries may travel xz-compressed (the stripped CUDA builds are ~50 MB each, ~8 MB packed).
for z in "$BIN"/*.xz; do
    [ -f "$z" ] || continue
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$z" "${z%.xz}"
done
for b in "$BIN"/*; do [ -f "$b" ] && chmod +x "$b"; done
if ldd "$BIN/embed_pipeline_bench" | grep "not found"; then
    echo "missing libraries (searched: $LIBDIRS)"; exit 1
fi

export GLIMPSE_EMBEDDER_FIXTURES=embedder/tests/fixtures
# PIPELINE_ONLY=1: only the end-to-end pipeline runs (embed_bench and the reference test
# binary need not travel).
if [ -z "${PIPELINE_ONLY:-}" ]; then
echo "## reference agreement, cuda-f32"
GLIMPSE_TEST_DEVICE=cuda-f32 "$BIN/reference" --nocapture --test-threads 1 2>&1 | tee "$OUT/reference-cuda-f32.log" | grep -E "on Cuda|test result|panicked|FAILED"
echo "## reference agreement, cuda (f16)"
GLIMPSE_TEST_DEVICE=cuda "$BIN/reference" --nocapture --test-threads 1 2>&1 | tee "$OUT/reference-cuda-f16.log" | grep -E "on Cuda|test result|panicked|FAILED"

echo "## embed_bench cuda (f16)"
"$BIN/embed_bench" --device cuda --batches 1,16,32,64,128,256 2>&1 | tee "$OUT/embed_bench_cuda.txt"
echo "## embed_bench cuda-f32"
"$BIN/embed_bench" --device cuda-f32 --quick --batches 32,64 2>&1 | tee "$OUT/embed_bench_cuda_f32.txt" | tail -4
fi
for batch in 64 256; do
    echo "## pipeline cuda (f16), batch $batch"
    "$BIN/embed_pipeline_bench" --device cuda --images 8192 --batch $batch 2>&1 | tee "$OUT/pipeline_cuda_b$batch.txt" | tail -10
done
if [ -z "${SKIP_CPU:-}" ]; then
    echo "## pipeline cpu, same machine"
    "$BIN/embed_pipeline_bench" --device cpu --images 512 --batch 64 2>&1 | tee "$OUT/pipeline_cpu.txt" | tail -12
fi
nvidia-smi --query-gpu=memory.used --format=csv | tee -a "$OUT/gpu.txt"
