# syntax=docker/dockerfile:1

# ---- build ---------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY schema.sql ./
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# ---- Litestream ----------------------------------------------------------------------------
# The official image of the pinned release (Debian-based, multi-arch; its static binary is
# /usr/local/bin/litestream). The entrypoint runs it when CHATFILES_REPLICA_URL is set.
FROM litestream/litestream:0.5.17 AS litestream

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 chatfiles \
    && useradd --system --uid 10001 --gid chatfiles --home-dir /data --shell /usr/sbin/nologin chatfiles \
    && mkdir -p /data \
    && chown chatfiles:chatfiles /data
COPY --from=build /src/target/release/chatfiles /usr/local/bin/chatfiles
COPY --from=litestream /usr/local/bin/litestream /usr/local/bin/litestream
# The entrypoint and the Litestream configuration it finds beside it.
COPY deploy/entrypoint deploy/litestream.yml /usr/local/lib/chatfiles/
ENV CHATFILES_BIND=0.0.0.0:8080 \
    CHATFILES_STORAGE_DIR=/data \
    RUST_LOG=info
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001
WORKDIR /data
# The image has no curl: the binary asks its own /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/chatfiles", "healthcheck"]
# chatfiles itself, or with CHATFILES_REPLICA_URL=s3://BUCKET/PATH: the database restored from
# the replica when /data has none, then `litestream replicate -exec "chatfiles serve"` (which
# forwards SIGTERM to chatfiles). Other commands (check, migrate, user …) run chatfiles directly.
ENTRYPOINT ["/usr/local/lib/chatfiles/entrypoint"]
CMD ["serve"]
