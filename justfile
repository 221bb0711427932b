# Palisade tasks. `just --list` shows them.

# Build the sample extensions for wasm32-wasip2.
build-guests:
    cd guests && cargo build --release --target wasm32-wasip2

# Run every test (host crates, end-to-end, SDK).
test:
    cargo test --workspace
    cd sdk/rust && cargo test

# Lints as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd sdk/rust && cargo clippy --all-targets -- -D warnings

# Start everything on the embedded defaults with the demo extensions installed.
up:
    cargo run -p palisade-cli -- up --demo

# Benchmarks (release build); writes docs/benchmarks.md.
bench:
    #!/usr/bin/env bash
    set -euo pipefail
    out=$(cargo bench -q -p palisade-tests --bench runtime)
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
    mem=$(free -g | awk '/Mem:/{print $2}')
    { echo "# Benchmarks"; echo; echo "Regenerate with \`just bench\`."; echo; echo "Machine: $(nproc) × ${cpu}, ${mem} GiB, $(uname -sr)."; echo; echo "$out"; echo; cat tests/benches/NOTES.md; } > docs/benchmarks.md
    cat docs/benchmarks.md
