# syntax=docker/dockerfile:1

# Build stage: compile the release binary. assets/ (the vendored GraphiQL) is compiled into it;
# benches/ and schema.graphql are copied so that every path the manifest or sources name exists.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migration/ migration/
COPY src/ src/
COPY assets/ assets/
COPY benches/ benches/
COPY schema.graphql ./
# The cache mounts keep the crate registry and target/ between builds; the binary is copied out
# because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin catalog-api \
    && cp target/release/catalog-api /usr/local/bin/catalog-api

# Runtime stage: the binary, CA certificates for TLS to PostgreSQL/Redis, and curl for the health check.
FROM debian:bookworm-slim
# Debian point releases drop old package versions, so pinning them would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 catalog \
    && useradd --system --uid 10001 --gid catalog --home-dir /var/lib/catalog-api --create-home \
       --shell /usr/sbin/nologin catalog
COPY --from=builder /usr/local/bin/catalog-api /usr/local/bin/catalog-api
# The default SQLite database (catalog.db) is created in the working directory, which the user owns.
WORKDIR /var/lib/catalog-api
USER 10001:10001
ENV CATALOG_BIND=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["catalog-api"]
CMD ["serve"]
