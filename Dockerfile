# podtailor: one static-enough binary on a small runtime image, running as non-root.
# Build: docker build -t podtailor:0.1.0 .   (the tag manifests/base/deployment.yaml runs; not
# built on the development machines: no engine)

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# dependencies first, so a source change does not rebuild them
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/render.rs && echo 'fn main() {}' > benches/profile_render.rs \
    && cargo build --release --locked --bin podtailor \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin podtailor

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/podtailor /usr/local/bin/podtailor
USER 65532:65532
EXPOSE 8443 8081
ENTRYPOINT ["/usr/local/bin/podtailor"]
CMD ["serve", "--help"]
