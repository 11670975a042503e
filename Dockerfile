# syntax=docker/dockerfile:1.7
# One Dockerfile for every service of the workspace:
#
#   docker build --build-arg SERVICE=gateway            -t jyt/gateway:dev .
#   docker build --build-arg SERVICE=slot-inventory     -t jyt/slot-inventory:dev .
#   docker build --build-arg SERVICE=card-issuing       -t jyt/card-issuing:dev .
#   docker build --build-arg SERVICE=channel-accounting -t jyt/channel-accounting:dev .
#
# The image runs the binary as uid 10001 with nothing writable but /tmp,
# matching the Helm chart's securityContext (readOnlyRootFilesystem). It
# reads settings as every deployment does: built-in defaults, then
# $JYT_CONFIG_DIR/$JYT_ENV.toml (here /etc/jyt/container.toml, which only
# makes it listen on all interfaces; Kubernetes mounts its own file over
# /etc/jyt), then JYT_<SERVICE>__<SECTION>__<KEY> variables.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
ARG SERVICE
WORKDIR /src
# Whole workspace: cargo needs every member's manifest to resolve -p.
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary
# is copied out because the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    case "${SERVICE:-}" in \
      gateway) port=8080 ;; slot-inventory) port=8101 ;; \
      card-issuing) port=8102 ;; channel-accounting) port=8103 ;; \
      *) echo "build with --build-arg SERVICE=gateway|slot-inventory|card-issuing|channel-accounting (got '${SERVICE:-}')" >&2; exit 1 ;; \
    esac; \
    cargo build --release --locked -p "$SERVICE" --bin "$SERVICE"; \
    mkdir -p /out/etc/jyt; \
    cp "target/release/$SERVICE" /out/service; \
    printf '%s\n' "$port" > /out/etc/jyt/port; \
    printf '# Baked into the image: listen on the container network.\n[http]\nhost = "0.0.0.0"\n' > /out/etc/jyt/container.toml

FROM debian:${DEBIAN}-slim AS runtime
ARG SERVICE
# curl only for HEALTHCHECK (Kubernetes uses httpGet probes instead);
# ca-certificates for TLS to managed PostgreSQL/Redis/OTLP endpoints.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jyt \
 && useradd --system --uid 10001 --gid jyt --home-dir /nonexistent --shell /usr/sbin/nologin jyt
COPY --from=build /out/service /usr/local/bin/jyt-service
COPY --from=build /out/etc/jyt/ /etc/jyt/
ENV JYT_CONFIG_DIR=/etc/jyt \
    JYT_ENV=container \
    JYT_SERVICE=${SERVICE} \
    TZ=Asia/Shanghai
LABEL org.opencontainers.image.title="jyt-${SERVICE}" \
      org.opencontainers.image.description="jyt ${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8101 8102 8103
# Liveness only (/healthz); readiness (/readyz: PostgreSQL and Redis
# reachable) is for orchestrators that route traffic. Port from the build.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:$(cat /etc/jyt/port)/healthz" >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/jyt-service"]
