# syntax=docker/dockerfile:1
#
# sig-gate container image: the HMAC-verifying sidecar (docs/operations.md).
#
# Build:  docker build --build-arg SIG_GATE_COMMIT="$(git rev-parse --short HEAD)" -t sig-gate:0.1.0 .
# Run:    docker run --rm -p 8080:8080 -p 9090:9090 \
#           -e INTERSERVICE_HMAC_SECRET_FILE=/run/secrets/hmac -v "$PWD/hmac:/run/secrets/hmac:ro" \
#           -e GATE_UPSTREAM=http://tool-gate:8081 sig-gate:0.1.0
#
# scripts/test-deploy.sh keeps this file honest where no Docker daemon is available: the
# compiler version below is the one CI runs, the build command is CI's, the build context
# (.dockerignore) holds every file cargo needs, and the HEALTHCHECK command is run against
# a real gate.

# The toolchain CI builds and tests with (rustc --version on the CI machine).
ARG RUST_VERSION=1.95.0

# ---- build: the release binary, compiled exactly as CI compiles it -------------------------
# Debian bookworm, like the runtime image below, so the binary links against the same glibc.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# .dockerignore is an allowlist: only the manifests, the lock file, build.rs and the Rust
# sources. No .git: build.rs takes the commit `sig-gate --version` prints from this argument
# (docker build --build-arg SIG_GATE_COMMIT="$(git rev-parse --short HEAD)" .); "unknown" without it.
ARG SIG_GATE_COMMIT=unknown
COPY . .
# --locked: the exact dependency versions of Cargo.lock, or fail. The caches keep the
# registry and incremental artefacts between builds; the binary is copied out of the cache
# mount in the same step, since a cache mount is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/sig-gate /out/sig-gate

# ---- runtime: glibc and CA certificates, no shell, no package manager ----------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sig-gate /usr/local/bin/sig-gate
# distroless's `nonroot` user, numeric so Kubernetes can enforce runAsNonRoot.
USER 65532:65532
# Proxy listener and admin listener (/metrics, /healthz, /readyz). The admin listener binds
# all interfaces in the image (the gate's own default is loopback) so that published ports,
# kubelet probes and Prometheus can reach it; it exposes fingerprints, never secrets.
ENV GATE_LISTEN=0.0.0.0:8080 \
    GATE_ADMIN_LISTEN=0.0.0.0:9090 \
    GATE_LOG_FORMAT=json
EXPOSE 8080 9090
# No curl in a distroless image: the gate probes itself. /readyz turns 503 as soon as a
# drain starts, so Docker marks a draining container unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["sig-gate", "probe", "http://127.0.0.1:9090/readyz"]
# SIGTERM starts the graceful drain (exit 0, or 1 if GATE_SHUTDOWN_GRACE_SECS runs out);
# give `docker stop` a --time above that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sig-gate", "serve"]
