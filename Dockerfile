# syntax=docker/dockerfile:1
#
# permdrift: the operator (`permdrift run`) and the CLI in one small, non-root image.
#
#   docker build -t permdrift:0.1.0 .
#   docker run --rm permdrift:0.1.0 --help
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below:
# the cargo registry and the target directory survive between builds, so a change
# to the sources recompiles permdrift only, not its ~400 dependencies.

ARG RUST_VERSION=1.95

# ---- build --------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# Only what `cargo build -p permdrift --bin permdrift` reads. benches/ is there
# because Cargo.toml declares [[bench]] targets and cargo refuses a manifest
# whose declared targets are missing; kube-test-server/ and test-support/
# because they are workspace members (and dev-dependencies) cargo must load.
# None of them is compiled.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY kube-test-server ./kube-test-server
COPY test-support ./test-support
COPY src ./src

# --locked: the image is built from exactly the dependency versions in Cargo.lock.
# -p permdrift --bin permdrift: the dev-only kube-test-server never enters the image.
# The binary is copied out of the cache mount, which is not part of any layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p permdrift --bin permdrift \
 && install -D -m 0755 target/release/permdrift /out/permdrift

# ---- runtime ------------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no package
# manager. Built on Debian 12 like the build stage, so the glibc versions match.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="permdrift" \
      org.opencontainers.image.description="Access-control drift detector for Kubernetes RBAC and AWS IAM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/permdrift /permdrift

# 65532 is distroless' "nonroot" user; numeric so that Kubernetes' runAsNonRoot
# can verify it without reading /etc/passwd.
USER 65532:65532

# /metrics, /healthz and /readyz (docs/operator.md, `http.listen`).
EXPOSE 8080

ENTRYPOINT ["/permdrift"]
CMD ["run", "--config", "/etc/permdrift/config.yaml"]
