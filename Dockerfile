# syntax=docker/dockerfile:1
# The Cairn image: one binary (`cairn`) for every role — server --role metadata|blocknode|gateway,
# the embedded server, the CLI, and (with the Kubernetes adapter) the operator.
#
#   docker build -t ghcr.io/cairn-dev/cairn:0.1.0 .
#   docker run --rm -p 7400:7400 -p 7480:7480 -v cairn-data:/var/lib/cairn \
#     -e CAIRN_HOST=0.0.0.0 -e CAIRN_ALLOW_PLAINTEXT=true ghcr.io/cairn-dev/cairn:0.1.0   # local trial only
#
# Outside loopback the server requires TLS (--tls-cert/--tls-key) or an explicit
# --allow-plaintext; the operator sets both host and TLS for the pods it creates.
#
# Memory: the runtime preloads jemalloc (LD_PRELOAD). glibc malloc fragments badly under the
# block node's many short-lived buffers and LevelDB's native allocations; jemalloc returns memory
# to the OS and keeps RSS close to the live heap. Unset LD_PRELOAD to compare.
# Media workers (sharp/libvips) need it most: on glibc without jemalloc sharp fragments memory
# and limits itself to sharp.concurrency() = 1; with it preloaded sharp sees jemalloc and uses
# the CPUs (the pool then sizes itself so that threads × sharp.concurrency() ≤ CPUs). MALLOC_CONF
# returns freed pages within a second, so RSS follows the decode peaks down (docs/media.md).
#
# Video: media workers run `ffprobe` (duration, codecs, bitrate, dimensions) and `ffmpeg` (the
# poster frame) as child processes with time and output caps; both come from Debian's ffmpeg
# package in the runtime stage. Without them video jobs fail with the reason ffmpeg_missing.

ARG NODE_IMAGE=node:20-slim

# ---- build: install with dev dependencies, compile TypeScript, then drop dev dependencies ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Native addons (classic-level, snappy) ship prebuilt binaries for linux x64/arm64 glibc; the
# toolchain is only a fallback when no prebuild matches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY proto ./proto
COPY src ./src
# `npm ci` runs `prepare`, which compiles src/ into dist/.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf dist/.tsbuildinfo

# ---- runtime: slim, non-root, read-only friendly ----
FROM ${NODE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 tini ca-certificates ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(find /usr/lib -name libjemalloc.so.2 | head -n 1)" /usr/local/lib/libjemalloc.so.2 \
 && groupadd --gid 10001 cairn \
 && useradd --uid 10001 --gid cairn --no-create-home --shell /usr/sbin/nologin cairn \
 && mkdir -p /var/lib/cairn \
 && chown cairn:cairn /var/lib/cairn
ENV NODE_ENV=production \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000 \
    CAIRN_DATA_DIR=/var/lib/cairn
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/proto ./proto
# Numeric user so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
VOLUME ["/var/lib/cairn"]
EXPOSE 7400 7480
# tini reaps zombies and forwards SIGTERM, so the server's graceful shutdown runs.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/bin/cairn.js"]
CMD ["server", "--embedded"]
