# syntax=docker/dockerfile:1
# Multi-stage build of the glimpse binary: release build, slim runtime,
# non-root user, /data volume, health check on /healthz.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# nasm: libjpeg-turbo's SIMD kernels (the JPEG decoder, as in Pillow).
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config g++ nasm \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p glimpse-server --features jpeg-simd --bin glimpse \
    && strip target/release/glimpse

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 glimpse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin glimpse \
    && mkdir -p /data /models /hf-cache && chown 10001:10001 /data /models /hf-cache
COPY --from=build /src/target/release/glimpse /usr/local/bin/glimpse
# Numeric, so that Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# Data dir (WAL, segments, manifest); mount a volume here.
VOLUME ["/data"]
# Mount a local CLIP model directory at /models/clip and pass --model /models/clip,
# or mount a Hugging Face cache volume at /hf-cache (HF_HOME) to keep downloads.
ENV HF_HOME=/hf-cache
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8000/healthz || exit 1"]
ENTRYPOINT ["glimpse"]
CMD ["serve", "--data-dir", "/data", "--bind", "0.0.0.0:8000"]
