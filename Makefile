# sig-gate. A newcomer needs two targets: `make run` (the gate in front of a built-in echo
# upstream, with a signed curl command to paste) and `make test` (every test there is).
# Everything else: `make help`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
BIN := target/debug/sig-gate
# Cargo tools the targets need, built from crates.io into the tree (never taken from ~/.cargo).
TOOLS := target/tools
CARGO_DENY_VERSION := 0.20.2
CARGO_FUZZ_VERSION := 0.13.2

# Fuzzing (fuzz/README.md): cargo-fuzz is installed into the repository's own target/tools, and
# run on the nightly toolchain. There is no key-registry target: the gate has no registry yet.
NIGHTLY ?= nightly
FUZZ_TARGETS := upstream_response chunked signature_headers config_toml
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
CARGO_FUZZ := $(CURDIR)/$(TOOLS)/bin/cargo-fuzz
HAVE_NIGHTLY := $(shell rustup run $(NIGHTLY) rustc --version >/dev/null 2>&1 && echo yes)

.PHONY: help build run test test-rust test-python test-typescript test-runbook test-deploy test-fuzz fuzz fuzz-run lint bench \
	hmac-rotation-drill game-day-scorecard hmac-migration-advice soak debug-bin prometheus-rules

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 24

build: ## release binary at target/release/sig-gate (the Dockerfile runs the same command)
	$(CARGO) build --release --locked

run: debug-bin ## sig-gate demo: the gate in front of a built-in echo upstream on loopback
	$(BIN) demo

test: test-rust test-python test-typescript test-runbook test-deploy test-fuzz ## every test: Rust, Python and TypeScript clients, drills (quick), deploy files and alert rules, fuzz smoke run

test-rust: ## unit, property, vector, allocation and black-box tests of every crate of the workspace (installs redis-server when missing)
	scripts/install-redis.sh
	$(CARGO) test --locked --workspace

test-python: ## the Python signer: vectors, unit tests, live interop with the real gate; its wheel and git-URL install
	scripts/test-python.sh
	scripts/test-python-package.sh

test-typescript: debug-bin ## the TypeScript signer: vectors, adapters, live interop with the real gate, the packed package (Node.js >= 18, npm ci)
	SIG_GATE_SKIP_BUILD=1 scripts/test-typescript.sh

test-runbook: debug-bin ## rotation drill and game-day scorecard in quick mode, real processes (installs redis-server when missing)
	scripts/install-redis.sh
	$(BIN) drill --quick
	$(BIN) scorecard --quick

test-deploy: ## Prometheus rules, kustomize overlays, dashboard, units, Prometheus end to end
	scripts/test-deploy.sh

prometheus-rules: ## deploy/prometheus/prometheusrule.yaml from alerts.yml; RUNBOOK_BASE_URL=https://... sets the runbook links' base
	python3 scripts/prometheus-rules.py $(if $(RUNBOOK_BASE_URL),--runbook-base-url '$(RUNBOOK_BASE_URL)')

test-fuzz: ## every fuzz target for FUZZ_SMOKE_SECONDS (5) each; skipped without a nightly toolchain
	@$(MAKE) --no-print-directory fuzz-run FUZZ_TIME=$(FUZZ_SMOKE_SECONDS)

fuzz: ## every fuzz target for FUZZ_SECONDS (60) each, nightly toolchain; crashes in fuzz/artifacts/
	@$(MAKE) --no-print-directory fuzz-run FUZZ_TIME=$(FUZZ_SECONDS)

# One run of every target, FUZZ_TIME seconds each, from the committed seeds (fuzz/corpus/<target>,
# read only) and the inputs found so far (fuzz/target/corpus/<target>, not committed).
fuzz-run:
ifeq ($(HAVE_NIGHTLY),yes)
	@test -x $(CARGO_FUZZ) || $(CARGO) install --locked --quiet --root $(CURDIR)/$(TOOLS) cargo-fuzz@$(CARGO_FUZZ_VERSION)
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$target && \
		RUSTUP_TOOLCHAIN=$(NIGHTLY) $(CARGO_FUZZ) fuzz run $$target target/corpus/$$target corpus/$$target \
			-- -max_total_time=$(FUZZ_TIME) -print_final_stats=1 || exit 1; \
	done
else
	@echo "test-fuzz: skipped: no nightly toolchain (rustup toolchain install $(NIGHTLY))"
endif

lint: $(TOOLS)/bin/cargo-deny ## rustfmt, clippy (warnings are errors), hadolint, cargo deny (bans, licenses, sources)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path bench/loadgen/Cargo.toml -- --check
	$(CARGO) clippy --locked --manifest-path bench/loadgen/Cargo.toml -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	scripts/lint-deploy.sh
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(CARGO) deny --locked check --hide-inclusion-graph bans licenses sources

bench: ## criterion verify ratios, then the load benchmark vs nginx and HAProxy, Redis and Ed25519 rows -> docs/benchmarks.md (BENCH_QUICK=1: smoke run)
	CARGO=$(CARGO) bench/bench.sh

soak: ## 10 min of signed load, upstream faults, client resets -> docs/soak.md (not in CI; SOAK_SECONDS=N)
	CARGO=$(CARGO) python3 scripts/soak.py

hmac-rotation-drill: debug-bin ## the runbook's rotation by redeploys, by Secret reloads, and on two replicas sharing Redis, under load, zero failed requests
	scripts/install-redis.sh
	$(BIN) drill

game-day-scorecard: debug-bin ## attack and fault scenarios against the real gate, scored
	$(BIN) scorecard

hmac-migration-advice: debug-bin ## the runbook's decision checkpoint (reads AUTH_SERVICES, ...)
	$(BIN) advise

debug-bin:
	$(CARGO) build --locked --bin sig-gate

$(TOOLS)/bin/cargo-deny:
	$(CARGO) install --locked --quiet --root $(TOOLS) cargo-deny@$(CARGO_DENY_VERSION)
