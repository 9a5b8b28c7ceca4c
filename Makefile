# cachefleet: run `make help` for the targets.
include hack/versions.env

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cachefleet
TOOLS := $(CACHE)/tools
CONTROLLER_GEN := $(TOOLS)/controller-gen-v$(CONTROLLER_TOOLS_VERSION)/controller-gen
GOLANGCI_LINT := $(TOOLS)/golangci-lint-v$(GOLANGCI_LINT_VERSION)/golangci-lint
HELM := $(TOOLS)/helm-v$(HELM_VERSION)/helm
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo "$$(hack/k8s-bins.sh envtest)/kubectl")
# -race: the agent is concurrent everywhere; the race detector runs on every test.
GO_TEST_FLAGS ?= -count=1 -race

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: test-crds
test-crds: $(CONTROLLER_GEN) ## Generate the ServiceMonitor CRD (from prometheus-operator's types) that tests install.
	@tmp=$$(mktemp -d); $(CONTROLLER_GEN) crd paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 output:crd:dir=$$tmp; \
		mkdir -p test/crds; cp $$tmp/monitoring.coreos.com_servicemonitors.yaml test/crds/; rm -rf $$tmp

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with .golangci.yml (errcheck, govet, staticcheck, gosec, revive, gocognit, sloglint, ...).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify-generated
verify-generated: manifests generate test-crds fmt ## Fail when generated or formatted files differ from the committed ones.
	@if [ -n "$$(git status --porcelain -- api config internal cmd test)" ]; then \
		echo "Generated files are out of date; run 'make manifests generate fmt' and commit:"; \
		git status --porcelain -- api config internal cmd test; git --no-pager diff --stat; exit 1; fi

.PHONY: envtest-assets
envtest-assets: ## Build (or reuse from the cache) etcd, kube-apiserver and kubectl; print their directory.
	@hack/k8s-bins.sh envtest

.PHONY: deps
deps: ## Install (as root on Debian/Ubuntu) or name the Debian packages the tests need; seconds, before any build.
	@hack/deps.sh

.PHONY: test
test: deps generated vet test-unit test-e2e ## Run every test: unit, envtest, integration (real valkey-server shards), e2e on kwok and on real nodes.

.PHONY: generated
generated: manifests generate test-crds fmt ## Regenerate CRDs, RBAC, DeepCopy and format (CI also checks the result is committed).

.PHONY: test-unit
test-unit: ## Unit, envtest (real kube-apiserver + etcd) and integration tests (real valkey-server shards).
	CACHEFLEET_SHARD_SERVER="$$(hack/valkey-bins.sh)" KUBEBUILDER_ASSETS="$$(hack/k8s-bins.sh envtest)" go test $(GO_TEST_FLAGS) ./...

E2E_CLUSTER ?= all
.PHONY: test-e2e
test-e2e: $(HELM) ## The e2e suite on fresh clusters: E2E_CLUSTER=all (default: kwok, then real nodes here), kwok, nodes or kind; includes helm lint/template of charts/cachefleet.
	HELM=$(HELM) E2E_CLUSTER=$(E2E_CLUSTER) hack/e2e.sh

.PHONY: golden
golden: ## Rewrite the golden files of the builders after an intended change.
	KUBEBUILDER_ASSETS="$$(hack/k8s-bins.sh envtest)" go test ./internal/controller/ ./internal/contract/ -run Golden -update

.PHONY: bench
bench: ## Benchmarks: ring and parser (go test -bench), fleet coordination and read-through figures, then redis-benchmark: direct vs twemproxy vs agent.
	go test -run XXX -bench . -benchtime 1s ./internal/cacheagent/ring/ ./internal/resp/
	CACHEFLEET_SHARD_SERVER="$$(hack/valkey-bins.sh)" go test -count=1 -v -run 'TestWritesInvalidateOtherAgentsL1OverTheBus|TestStampedeOf300|TestColdKeyReadByAThousand|TestTTLBoundaryUnderSteadyLoad|TestOriginOutageIsCoveredByStaleIfError' ./internal/cacheagent/server/ | grep -E 'bus-latency|stampede:|read-through:|ttl boundary|origin outage'
	hack/bench.sh

SOAK_DURATION ?= 5m
.PHONY: soak
soak: ## Two agents under well-behaved and hostile clients at once for SOAK_DURATION; prints errors, wrong values, peak RSS (not in make test).
	cd test/soak && CACHEFLEET_SHARD_SERVER="$$(../../hack/valkey-bins.sh)" SOAK_DURATION=$(SOAK_DURATION) go test -tags soak -count=1 -timeout 0 -v . | grep -v '^time='

##@ Build

.PHONY: build
build: ## Build bin/manager and bin/agent.
	CGO_ENABLED=0 go build -trimpath -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -o bin/agent ./cmd/agent

.PHONY: run
run: manifests generate ## Run the manager against the current kubeconfig.
	go run ./cmd/manager

##@ Local cluster

KWOK_NAME ?= cachefleet
.PHONY: dev
dev: ## Start a local cluster with real nodes (DEV_CLUSTER=kwok: simulated), run the manager, apply the samples, forward 127.0.0.1:6380 to an agent.
	@hack/dev.sh up $(KWOK_NAME)

.PHONY: dev-down
dev-down: ## Stop what `make dev` started.
	@hack/dev.sh down $(KWOK_NAME)

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster in the current kubeconfig.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs (and every fleet) from the cluster.
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

IMG_MANAGER ?= cachefleet/manager:dev
IMG_AGENT ?= cachefleet/agent:dev
.PHONY: docker-build
docker-build: ## Build the manager and agent images (needs a container engine).
	docker build --build-arg BINARY=manager -t $(IMG_MANAGER) .
	docker build --build-arg BINARY=agent -t $(IMG_AGENT) .

.PHONY: kind-deploy
kind-deploy: docker-build ## Load the images into the kind cluster "cachefleet" and deploy config/default.
	kind load docker-image --name cachefleet $(IMG_MANAGER) $(IMG_AGENT)
	PATH="$(dir $(KUBECTL)):$$PATH" IMG_MANAGER=$(IMG_MANAGER) IMG_AGENT=$(IMG_AGENT) hack/operator.sh install kustomize

$(CONTROLLER_GEN):
	GOBIN=$(dir $@) go install sigs.k8s.io/controller-tools/cmd/controller-gen@v$(CONTROLLER_TOOLS_VERSION)

$(HELM): # built from the Go module proxy (a few minutes once), cached by version
	GOBIN=$(dir $@) go install helm.sh/helm/v3/cmd/helm@v$(HELM_VERSION)

$(GOLANGCI_LINT): # built from the Go module proxy (about 80 s once), cached by version
	GOBIN=$(dir $@) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$(GOLANGCI_LINT_VERSION)
