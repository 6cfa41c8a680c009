# redsplit: a read/write-splitting Redis proxy.
#
#   docker build -t redsplit .
#   docker run -p 7480:7480 -p 7481:7481 \
#     -e REDSPLIT_MASTER=redis-master:6379 -e REDSPLIT_REPLICAS=redis-replica-1:6379,redis-replica-2:6379 \
#     redsplit
#
# The configuration is /etc/redsplit/proxy.yaml (mount your own over it; it is reloaded
# when it changes). SIGTERM drains in-flight replies within shutdown_grace_ms.

# The full Rust image: building jemalloc (the allocator) needs make.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin redsplit

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin redsplit
COPY --from=build /src/target/release/redsplit /usr/local/bin/redsplit
COPY proxy.yaml /etc/redsplit/proxy.yaml
USER 10001
ENV REDSPLIT_LISTEN=0.0.0.0:7480 \
    REDSPLIT_ADMIN_LISTEN=0.0.0.0:7481
EXPOSE 7480 7481
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/redsplit", "healthcheck", "--config", "/etc/redsplit/proxy.yaml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/redsplit"]
CMD ["run", "--config", "/etc/redsplit/proxy.yaml"]
