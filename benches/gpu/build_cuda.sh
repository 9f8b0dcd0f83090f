#!/usr/bin/env bash
# Builds the GPU benchmarks and the embedder's reference test with `--features cuda` on a
# machine without a CUDA install or a GPU, using NVIDIA's CUDA 13.0 wheels from PyPI
# (nvcc, headers, cuBLAS, cuRAND, NVRTC, runtime) and a link-time stub for the driver's
# libcuda.so.1 (the real one is loaded from the GPU machine's driver at run time).
#
#   benches/gpu/build_cuda.sh [SDK_DIR]   # default /tmp/glimpse-cuda-sdk
#
# The binaries land in .devcarry/ (git-ignored), ready for benches/gpu/run_device_checks.sh.
# On a machine with the CUDA toolkit installed, plain `cargo build --features cuda` works.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nasm >/dev/null || { echo "nasm is required (libjpeg-turbo's SIMD): apt-get install nasm" >&2; exit 1; }
SDK=${1:-/tmp/glimpse-cuda-sdk}
ARCH=${CUDA_COMPUTE_CAP:-90}   # 90 = H100/H200; 89 = L4; 86 = A10/A10G; 80 = A100; 75 = T4
mkdir -p "$SDK/whl" "$SDK/root"
pip_get() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$SDK/whl" "$@"
}
pip_get "nvidia-cuda-nvcc>=13.0,<13.1" "nvidia-cuda-runtime>=13.0,<13.1" "nvidia-cuda-crt>=13.0,<13.1" \
    "nvidia-cuda-cccl>=13.0,<13.1" "nvidia-nvvm>=13.0,<13.1" "nvidia-cuda-nvrtc>=13.0,<13.1" \
    "nvidia-cublas>=13.0,<13.1" "nvidia-curand>=10.4,<10.5"
for w in "$SDK"/whl/*.whl; do unzip -q -o "$w" -d "$SDK/root"; done
CUDA_HOME="$SDK/root/nvidia/cu13"
(cd "$CUDA_HOME/lib" && for f in libcudart libnvrtc libcublas libcublasLt libcurand; do
    ln -sf "$(ls $f.so.* | head -1)" "$f.so"; done)
# Link-time stub of the driver API: every cu* entry point of cuda.h, SONAME libcuda.so.1.
echo '#include <cuda.h>' > "$SDK/cuda_h.c"
gcc -E -I"$CUDA_HOME/include" "$SDK/cuda_h.c" | tr '\n' ' ' \
    | grep -oE 'CUresult +(CUDAAPI +)?cu[A-Za-z0-9_]+ *\(' \
    | sed -E 's/.* (cu[A-Za-z0-9_]+) *\(/\1/' | sort -u \
    | sed 's/.*/int &(void) { return 999; }/' > "$SDK/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$SDK/cuda_stub.c" -o "$CUDA_HOME/lib/libcuda.so"

export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" LIBRARY_PATH="$CUDA_HOME/lib"
export CUDA_COMPUTE_CAP=$ARCH CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
cargo build --release --locked -p glimpse-benches --features cuda,jpeg-simd \
    --bin embed_bench --bin embed_pipeline_bench
REF=$(cargo test --release --locked -p glimpse-embedder --features cuda,jpeg-simd --test reference \
    --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="reference" and m.get("executable"):
        print(m["executable"])')
mkdir -p .devcarry
cp "$CARGO_TARGET_DIR/release/embed_bench" "$CARGO_TARGET_DIR/release/embed_pipeline_bench" .devcarry/
cp "$REF" .devcarry/reference
strip .devcarry/*
xz -T0 -6 -f .devcarry/embed_bench .devcarry/embed_pipeline_bench .devcarry/reference
ls -la .devcarry
