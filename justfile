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
