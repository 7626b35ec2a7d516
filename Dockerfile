# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY assets ./assets
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard
VOLUME ["/var/lib/switchyard"]
EXPOSE 8080
# On SIGTERM open streams get server.shutdown_grace_secs (30) and the stop at most 15 s more; docker
# stop kills after 10 s: run with --stop-timeout 45 (Compose: stop_grace_period: 45s; Kubernetes:
# terminationGracePeriodSeconds: 45), at least the grace plus 15 s.
ENTRYPOINT ["switchyard"]
CMD ["serve"]
