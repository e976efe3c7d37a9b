# podtailor — developer entry points. `make run` and `make test` are the two set-up commands.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := target/venv
BIN := target/debug/podtailor
ENVTEST_BIN := target/envtest/bin
# kubectl for the offline checks: the one built with the control plane (make envtest-bin) where
# Go is installed, else the one on PATH.
KUBECTL ?= $(if $(shell command -v go),$(ENVTEST_BIN)/kubectl,kubectl)
# helm for the chart's tests (charts/podtailor): the one `make helm-bin` builds where Go is
# installed, else the one on PATH.
HELM ?= $(if $(shell command -v go),target/tools/bin/helm,helm)
EXAMPLES := --template examples/template.yaml --overrides examples/overrides
# The binary as `cargo test` builds it (dev-dependency features unified): the checks that run
# the binary use it, so `make test` compiles the crate graph once.
TEST_BUILD := $(CARGO) test --locked --no-run --quiet

.PHONY: all build run render certs image deploy undeploy e2e e2e-local e2e-build shellcheck crd crd-check manifests-test docs-test test fmt-check clippy go-vet unit oracle venv bench bench-load fuzz fuzz-smoke fuzz-build mutants bench-cluster envtest envtest-bin helm-bin clean

all: build

build:
	$(CARGO) build --locked

## Where `make run` listens: the webhook (HTTPS) and the admin port (plain HTTP). Either can be
## given, e.g. `make run LISTEN=127.0.0.1:9443 ADMIN_LISTEN=127.0.0.1:9081`. The admin port is
## not 8080, where kubectl without a kubeconfig falls back to.
LISTEN ?= 127.0.0.1:8443
ADMIN_LISTEN ?= 127.0.0.1:8081

## The main job on the embedded example: the webhook on https://$(LISTEN) (POST /mutate),
## admin on http://$(ADMIN_LISTEN), serving examples/ with the development certificates. When
## serve fails (a port in use, say), one more line says how to pick other addresses.
SERVE_EXAMPLES = $(BIN) serve $(EXAMPLES) --tls-cert certs/tls.crt --tls-key certs/tls.key \
  --listen $(LISTEN) --admin-listen $(ADMIN_LISTEN)
run: build certs
	@echo '$(SERVE_EXAMPLES)'
	@$(SERVE_EXAMPLES) || { status=$$?; echo "make run: other addresses: make run LISTEN=HOST:PORT ADMIN_LISTEN=HOST:PORT (now LISTEN=$(LISTEN) ADMIN_LISTEN=$(ADMIN_LISTEN))" >&2; exit $$status; }

## What the webhook does to the fixture AdmissionReview, without a server: the JSON patch it
## would answer with.
render: build
	$(BIN) render $(EXAMPLES) -o patch examples/review.json

## Development CA and serving certificate under certs/ (kept if present; FORCE=1 remakes them).
certs:
	scripts/certs.sh $(if $(FORCE),--force)

## The container image podtailor:0.1.0 (Dockerfile), the tag the manifests use. Needs Docker.
image:
	docker build --tag podtailor:0.1.0 .

## Install on the cluster of kubectl's current context: the development certificates (made if
## missing), then the certs/ overlay (kubectl apply -k certs); waits until both replicas are ready.
## Needs the image podtailor:0.1.0 on the nodes (docs/operations.md: Install on a cluster). Not part of `test`.
deploy: certs
	@command -v $(KUBECTL) >/dev/null || { echo "deploy: kubectl is required"; exit 1; }
	$(KUBECTL) apply -k certs
	$(KUBECTL) -n podtailor-system rollout status deployment/podtailor --timeout=180s

## Remove podtailor from the cluster: the webhook configurations first (from then on no pod
## waits on podtailor), then everything else, the CRD included: every PodOverride is deleted.
undeploy:
	@command -v $(KUBECTL) >/dev/null || { echo "undeploy: kubectl is required"; exit 1; }
	$(KUBECTL) delete --ignore-not-found mutatingwebhookconfiguration/podtailor validatingwebhookconfiguration/podtailor
	$(KUBECTL) delete --ignore-not-found -k manifests

## The whole test suite: format, lints, Rust tests, the committed CRD, the install manifests,
## the documentation's console blocks, independent oracles, a few seconds of each fuzz target,
## and the control-plane tier (a real kube-apiserver and etcd).
test: fmt-check clippy envtest-bin go-vet unit crd-check manifests-test docs-test shellcheck oracle fuzz-smoke envtest

## kube-apiserver, kubectl and etcd built from Go modules (tests/envtest/go.mod) into
## target/envtest/bin; nothing is built where KUBEBUILDER_ASSETS names binaries of your own.
envtest-bin:
	scripts/envtest-bin.sh

## helm built from its Go module (helm.sh/helm/v4 at the version tests/helm/go.mod names) into
## target/tools/bin/helm, for the chart's tests and its install in the control-plane tier.
helm-bin:
	scripts/helm-bin.sh

## The control-plane tier (tests/envtest.rs): etcd and kube-apiserver on loopback, podtailor
## installed from manifests/, the API server calling the webhook. Without the binaries it
## prints one line and skips; PODTAILOR_ENVTEST=require (CI) makes that a failure.
envtest: envtest-bin helm-bin
	$(CARGO) test --locked --test envtest

## The end-to-end suite on a kind cluster (scripts/e2e.sh; needs docker, kind, kubectl):
## creates podtailor-e2e, builds and loads the image, installs with the certs overlay, runs
## tests/e2e.rs, and deletes the cluster unless KEEP=1. Not part of `test`, which compiles
## the suite and checks its scripts and manifests.
e2e:
	scripts/e2e.sh

## The same suite on a cluster of processes on this machine (scripts/e2e-local.sh; needs root
## and Go; containerd, runc, CNI plugins, busybox-static and umoci come from apt-get): etcd,
## kube-apiserver, controller manager, scheduler, containerd, a kubelet and kube-proxy in a
## network namespace of their own; images built locally; podtailor installed with
## `kubectl apply -k certs`; everything torn down after (KEEP=1 waits first). Not part of `test`.
e2e-local:
	scripts/e2e-local.sh

## The shell scripts, by shellcheck (installed into the venv from PyPI).
shellcheck: venv
	$(VENV)/bin/shellcheck scripts/*.sh

## manifests/base/crd.yaml from the PodOverride type, and the chart's copy of it.
crd: build
	$(BIN) crd > manifests/base/crd.yaml
	cp manifests/base/crd.yaml charts/podtailor/files/crd.yaml

## The install (tests/manifests): the CRD, a valid object whose schema takes every example
## PodOverride; the base and both overlays rendered by `kubectl kustomize` (offline), valid,
## read-only RBAC, the webhooks' settings, ports, probes, certificates and CA bundles; the Helm
## chart (charts/podtailor): helm lint, its objects those of the base, its values, its schema.
manifests-test: venv envtest-bin helm-bin
	@command -v $(KUBECTL) >/dev/null || { echo "manifests-test: kubectl is required (offline use only): make envtest-bin builds it (needs Go)"; exit 1; }
	@command -v $(HELM) >/dev/null || { echo "manifests-test: helm is required: make helm-bin builds it (needs Go)"; exit 1; }
	KUBECTL=$$(command -v $(KUBECTL)) HELM=$$(command -v $(HELM)) $(VENV)/bin/pytest -q tests/manifests

## The ```console blocks of README.md and docs/ run, and their output compared with what they
## show (tests/docs/test_console.py: `...` marks left-out lines; blocks that need a cluster are
## marked not run, with the reason).
docs-test: venv
	@$(TEST_BUILD)
	PODTAILOR_BIN=$(BIN) $(VENV)/bin/pytest -q tests/docs

## Fails when manifests/base/crd.yaml is not what `podtailor crd` prints, or the chart's copy differs.
crd-check:
	@$(TEST_BUILD)
	@$(BIN) crd | diff -u manifests/base/crd.yaml - || { echo "manifests/base/crd.yaml is stale: run make crd"; exit 1; }
	@diff -u manifests/base/crd.yaml charts/podtailor/files/crd.yaml || { echo "charts/podtailor/files/crd.yaml is stale: run make crd"; exit 1; }

fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml -- --check

# tests/envtest.rs is `test = false` (make envtest runs it), so --all-targets leaves it out
clippy:
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings
	$(CARGO) clippy --locked --test envtest --all-features -- -D warnings

## gofmt and go vet on the project's Go code (tests/envtest: the etcd wrapper, policycost);
## says so and checks nothing where Go is not installed.
go-vet:
	@if ! command -v go >/dev/null; then echo "go-vet: Go is not installed; nothing checked"; exit 0; fi; \
	cd tests/envtest && unformatted=$$(gofmt -l etcd policycost tools.go) && \
	if [ -n "$$unformatted" ]; then echo "go-vet: gofmt would change: $$unformatted"; exit 1; fi && \
	go vet ./etcd ./policycost

# tests/server.rs runs httpx from the venv
unit: venv
	$(CARGO) test --locked

# --no-compile: no bytecode for the whole of Airflow at install; Python compiles what the tests
# import when they import it.
$(VENV)/.installed: tests/oracle/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile -r tests/oracle/requirements.txt
	touch $@

venv: $(VENV)/.installed

## kubectl's strategic merge, Python's jsonpatch, kubernetes-validate and Airflow's own pod
## construction (apache-airflow-providers-cncf-kubernetes) against `render`.
oracle: venv envtest-bin
	@$(TEST_BUILD)
	@command -v $(KUBECTL) >/dev/null || { echo "oracle: kubectl is required (offline use only): make envtest-bin builds it (needs Go)"; exit 1; }
	KUBECTL=$$(command -v $(KUBECTL)) PODTAILOR_BIN=$(BIN) $(VENV)/bin/pytest -q tests/oracle

## Criterion: render of the fixture review versus its floor (parse and re-serialise), in
## alternating fresh processes, 5 rounds; prints the medians and the ratio. Then the largest
## reviews by shape (benches/bounds.rs): median time and peak memory against their targets.
bench:
	$(CARGO) bench --locked --bench render --bench bounds --no-run
	@$(PYTHON) benches/ratio.py 5
	$(CARGO) bench --locked --bench bounds

## Pod creations through a real API server (the envtest control plane) with podtailor, with no
## webhook and in policy mode, side by side; the policy's CEL cost as the pod grows (policycost)
## and where the API server's limit is met; serve --cluster with 5 000 PodOverrides: time to
## ready, memory.
bench-cluster: envtest-bin
	$(CARGO) bench --locked --bench cluster

## Load on `serve` (release build) over HTTPS, HTTP/1.1 keep-alive, with oha: closed loop at
## 1, 16 and 64 connections, open loop at 2000 and 6000 requests/s, server and oha on separate
## cores, 3 rounds (benches/load.py; docs/development.md). oha is installed from crates.io into
## target/tools. Options through LOAD_ARGS, e.g. LOAD_ARGS="--bin2 PATH" to compare two binaries.
OHA := target/tools/bin/oha
OHA_VERSION := 1.16.0
LOAD_ARGS ?=

$(OHA):
	$(CARGO) install --locked --quiet oha --version $(OHA_VERSION) --root target/tools

bench-load: $(OHA)
	$(PYTHON) benches/load.py --oha $(OHA) $(LOAD_ARGS)

## Mutation testing with cargo-mutants (from crates.io, installed into target/tools): every
## mutant of the merge engine, the store, the webhook and the validation should make a test
## fail. One area at a time, each with the tests that exercise it (MUTANTS_AREAS=store runs
## one); builds in target/mutants-build; reports in target/mutants/AREA/mutants.out. Slow
## (about a minute a mutant on 2 cores, 800 mutants): not part of `test`.
MUTANTS_BIN := target/tools/bin/cargo-mutants
MUTANTS_AREAS ?= store webhook validate merge
MUTANTS_store := -f 'src/store/**' -- --lib --test cluster --test server --test cli
MUTANTS_webhook := -f 'src/webhook/**' -- --lib --test webhook --test server
MUTANTS_validate := -f src/validate.rs -- --lib --test webhook --test cli
MUTANTS_merge := -f 'src/merge/**' -- --lib --test rules --test properties
MUTANTS_FLAGS ?= --test-tool cargo --timeout 300 --build-timeout 900

$(MUTANTS_BIN):
	$(CARGO) install --locked cargo-mutants --version 27.1.0 --root target/tools

# No debug info in the mutants' builds: each mutant relinks the test binaries, and linking is
# most of a mutant's build.
mutants: $(MUTANTS_BIN) venv
	@mkdir -p target/mutants; status=0; $(foreach a,$(MUTANTS_AREAS),PODTAILOR_PYTHON=$(CURDIR)/$(VENV)/bin/python CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR=$(CURDIR)/target/mutants-build $(MUTANTS_BIN) mutants $(MUTANTS_FLAGS) -o target/mutants/$(a) $(MUTANTS_$(a)) || status=1;) exit $$status

## Coverage-guided fuzzing of every place bytes from outside enter (fuzz/, README: Tests):
## each target for FUZZ_SECONDS (default 60), then its executions and exec/s. cargo-fuzz is
## installed from crates.io under target/tools; it needs a nightly rustc: the rustup nightly
## toolchain when installed, else the stable one with RUSTC_BOOTSTRAP=1. No sanitizer: the
## code has no unsafe, and the fuzzer runs twice as fast without one.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
CARGO_FUZZ := target/tools/bin/cargo-fuzz
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TOOLCHAIN := $(if $(shell rustup toolchain list 2>/dev/null | grep '^nightly'),RUSTUP_TOOLCHAIN=nightly,RUSTC_BOOTSTRAP=1)
export FUZZ_BUILD_FLAGS := --fuzz-dir fuzz --target-dir target/fuzz --sanitizer none --codegen-units 16
FUZZ_RUN := $(FUZZ_TOOLCHAIN) CARGO_FUZZ=$(CARGO_FUZZ) scripts/fuzz.sh

$(CARGO_FUZZ):
	$(CARGO) install --locked --quiet cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root target/tools

fuzz-build: $(CARGO_FUZZ)
	$(FUZZ_TOOLCHAIN) $(CARGO_FUZZ) fuzz build $(FUZZ_BUILD_FLAGS)

fuzz: fuzz-build
	$(FUZZ_RUN) $(FUZZ_SECONDS)

## Each fuzz target for FUZZ_SMOKE_SECONDS (default 5): part of `test`.
fuzz-smoke: fuzz-build
	$(FUZZ_RUN) $(FUZZ_SMOKE_SECONDS)

clean:
	$(CARGO) clean
