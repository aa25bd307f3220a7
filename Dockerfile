# syntax=docker/dockerfile:1
#
# The session-monitor image, for the Kubernetes DaemonSet in deploy/kubernetes. Two
# ways to build it:
#
# 1. From source, for a registry (the default target, two stages):
#
#      docker build -t session-monitor:0.1.0 .
#
# 2. From a daemon binary built beforehand (target `prebuilt`, one stage, no Rust
#    toolchain in any image): the build context holds just the binary, named
#    `session-monitor`. The tests build the image this way, with podman, on a Debian
#    base they make locally (no registry):
#
#      mkdir ctx && cp target/debug/session-monitor ctx/
#      podman build --target prebuilt --build-arg RUNTIME_IMAGE=localhost/debian:bookworm \
#          -f Dockerfile -t session-monitor:test ctx
#
# RUNTIME_IMAGE is the base of the image that runs: any Debian 12 (glibc, as the
# binary is linked against it); debian:bookworm-slim by default.
#
# Builder: Debian bookworm with the toolchain pieces the eBPF build needs, pinned to
# the versions that build and load (README "Building"):
# - stable Rust for the daemon (the workspace declares rust-version 1.95);
# - a dated nightly with rust-src for the eBPF crate, which session-monitor's build.rs
#   builds with `rustup run nightly cargo build -Z build-std=core`;
# - bpf-linker 0.13.0 built against LLVM 22 from bookworm-security. bpf-linker's LLVM
#   must have the nightly rustc's LLVM major version (22) and be at least as new, or
#   linking fails with "Invalid record"; one other bpf-linker release produced BTF
#   that kernels reject, hence the exact version.
#
# Runtime: RUNTIME_IMAGE with the binary only. It runs as root with the DaemonSet's
# short list of capabilities; a non-root user is not possible in practice, because
# Kubernetes gives a non-root process added capabilities only through file
# capabilities on its binary, and the daemon owns root's state on the node (see
# deploy/kubernetes/daemonset.yaml).

ARG RUST_VERSION=1.95.0
ARG NIGHTLY_DATE=2026-05-20
ARG BPF_LINKER_VERSION=0.13.0
ARG RUNTIME_IMAGE=debian:bookworm-slim

# The image from a prebuilt binary. First in the file: builders that build every
# stage up to the target (buildah) then never start the Rust builder below.
FROM ${RUNTIME_IMAGE} AS prebuilt
COPY session-monitor /usr/local/bin/session-monitor
USER 0:0
ENTRYPOINT ["/usr/local/bin/session-monitor"]
CMD ["run"]

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG NIGHTLY_DATE
ARG BPF_LINKER_VERSION

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

# build.rs asks rustup for the toolchain called `nightly`: install the dated one and
# make `nightly` that exact build, so that a newer nightly (and LLVM) never slips in.
RUN rustup toolchain install "nightly-${NIGHTLY_DATE}" --profile minimal --component rust-src \
 && host="$(rustc -vV | sed -n 's/^host: //p')" \
 && ln -s "${RUSTUP_HOME}/toolchains/nightly-${NIGHTLY_DATE}-${host}" \
          "${RUSTUP_HOME}/toolchains/nightly-${host}" \
 && rustup run nightly rustc -vV | grep -q '^LLVM version: 22\.'

RUN LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker \
      --version "${BPF_LINKER_VERSION}" --locked --no-default-features --features llvm-22

WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p session-monitor \
 && install -D -m 0755 target/release/session-monitor /out/session-monitor

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/session-monitor /usr/local/bin/session-monitor
# The daemon needs root and the capabilities the DaemonSet adds; see above.
USER 0:0
ENTRYPOINT ["/usr/local/bin/session-monitor"]
CMD ["run"]
