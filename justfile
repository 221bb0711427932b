# Palisade tasks. `just --list` shows them.

# Build the sample extensions for wasm32-wasip2.
build-guests:
    cd guests && cargo build --release --target wasm32-wasip2

# Run every test on the embedded defaults: the SDK and the sample extensions natively, the
# UI bridge (`sdk/ui`, with Node's test runner), the JavaScript sample (Node's test runner,
# then its component, which the end-to-end tests publish), then the workspace (host crates
# and end-to-end; the README's command). `.ci/run` runs this.
test:
    cd sdk/rust && cargo test --all-features
    cd guests && cargo test
    cd sdk/ui && npm ci --no-audit --no-fund && npm test
    cd guests/js-hello && npm ci --no-audit --no-fund && npm test && npm run build
    cargo test --workspace

# The tests again with the registry and end-to-end suites on PostgreSQL (default: the
# local server), in a database of their own that is recreated first; every test makes a
# schema in it. `.ci/run` runs this.
test-pg server="postgres://postgres@127.0.0.1:5432" database="palisade_test_pg":
    psql "{{server}}/postgres" -v ON_ERROR_STOP=1 -q -c 'DROP DATABASE IF EXISTS {{database}} WITH (FORCE)' -c 'CREATE DATABASE {{database}}'
    cd guests/js-hello && npm ci --no-audit --no-fund && npm run build
    PALISADE_TEST_POSTGRES_URL="{{server}}/{{database}}" cargo test --workspace

# The browser suite: `palisade up --demo` and Debian's Chromium (/usr/bin/chromium, never a
# downloaded browser) driven by playwright-core through the demo host page of the ticket
# widget. Screenshots go to `output` (default tests/browser/output). `.ci/run` runs this.
test-browser output="output":
    cargo build -p palisade-cli
    cd tests/browser && npm ci --no-audit --no-fund && PALISADE_BROWSER_OUTPUT="{{output}}" PALISADE_BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/palisade" npm test

# The Kubernetes manifests of docs/deploy/base: each validated against the Kubernetes
# schemas (kubernetes-validate, from PyPI, with --strict), the kustomization checked to
# list every manifest and file, and its palisade.toml checked by `palisade config check`
# with its TLS paths pointed at development certificates. `.ci/run` runs this.
check-deploy:
    #!/usr/bin/env bash
    set -euo pipefail
    base=docs/deploy/base
    kubernetes-validate --strict $(ls "$base"/*.yaml | grep -v '/kustomization.yaml$')
    python3 - "$base" <<'PY'
    import pathlib, sys, yaml
    base = pathlib.Path(sys.argv[1])
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    files = {f for g in kustomization.get("configMapGenerator", []) for f in g["files"]}
    problems = [f"{name} is not in kustomization.yaml resources" for name in sorted(present - listed)]
    problems += [f"kustomization.yaml lists {name}, which does not exist" for name in sorted(listed - present)]
    problems += [f"kustomization.yaml generates from {name}, which does not exist" for name in sorted(files) if not (base / name).is_file()]
    for problem in problems:
        print(f"{base}: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
    PY
    cargo build -q -p palisade-cli --bin palisade
    palisade="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/palisade"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$palisade" certs dev --out "$work/tls" --host palisade-runner-0.palisade-runner > /dev/null
    sed "s#/etc/palisade/tls#$work/tls#" "$base/palisade.toml" > "$work/palisade.toml"
    "$palisade" config check "$work/palisade.toml"
    echo "docs/deploy/base: manifests valid, kustomization complete, palisade.toml checked"

# Formatting of every cargo workspace and clippy with warnings as errors. `.ci/run` runs this.
lint:
    cargo fmt --all -- --check
    cd sdk/rust && cargo fmt -- --check
    cd guests && cargo fmt --all -- --check
    cd tests/guests && cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd sdk/rust && cargo clippy --all-targets -- -D warnings
    cd sdk/rust && cargo clippy --all-targets --all-features -- -D warnings

# Start everything on the embedded defaults with the demo extensions installed.
up:
    cargo run -p palisade-cli -- up --demo

# Benchmarks (release build): the runtime bench and the load bench; writes
# docs/benchmarks.md. The load bench needs wrk (installed with apt-get when running as
# root) and compares against `wasmtime serve` of the runtime's wasmtime version, installed
# once into /var/tmp/palisade-bench (about 20 minutes; skipped with a notice if that fails).
# The storage and events scenarios also run on the local PostgreSQL server (PALISADE_BENCH_POSTGRES_URL,
# default postgres://postgres@127.0.0.1:5432/postgres; set it empty to skip PostgreSQL).
bench:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v wrk >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ]; then
            echo "wrk is missing: installing it with apt-get" >&2
            apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
        else
            echo "the load bench needs wrk: install it (e.g. sudo apt-get install -y wrk) and rerun" >&2
            exit 1
        fi
    fi
    if [ -z "${PALISADE_BENCH_WASMTIME:-}" ]; then
        version=$(sed -n '/^name = "wasmtime"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
        root="/var/tmp/palisade-bench/wasmtime-${version}"
        if [ ! -x "$root/bin/wasmtime" ]; then
            echo "installing wasmtime-cli ${version} into $root for the wasmtime serve baselines (about 20 minutes)" >&2
            cargo install wasmtime-cli --version "$version" --locked --root "$root" \
                || echo "could not install wasmtime-cli: the wasmtime serve baselines will be skipped" >&2
        fi
        export PALISADE_BENCH_WASMTIME="$root/bin/wasmtime"
    fi
    cargo build --release -p palisade-cli
    target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    runtime=$(cargo bench -q -p palisade-tests --bench runtime)
    load=$(PALISADE_BIN="$target/release/palisade" cargo bench -q -p palisade-tests --bench load)
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
    mem=$(free -g | awk '/Mem:/{print $2}')
    { echo "# Benchmarks"; echo; echo "Regenerate with \`just bench\`."; echo; echo "Machine: $(nproc) × ${cpu}, ${mem} GiB, $(uname -sr)."; echo; echo "$runtime"; echo; echo "$load"; echo; cat tests/benches/NOTES.md; } > docs/benchmarks.md
    cat docs/benchmarks.md
