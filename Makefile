# ironlb developer entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
export GOTOOLCHAIN := local
GO ?= go
# The version `ironlb version` prints and the image is tagged with: the
# nearest tag, commits since and a hash, "-dirty" with uncommitted changes
# (v0.1.0-12-gabc1234-dirty), a bare hash before the first tag.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/ironlb/ironlb/internal/version.Version=$(VERSION)

# The container image (`make image`). Its reference is IMAGE_REPO:IMAGE_TAG,
# and the tag is the version, never "latest": a build of a release tag is
# that release (v0.2.0, the tag deploy/ironlb.yaml names), any other build
# says which commit it is. `make image VERSION=v0.2.0` stamps binary and tag;
# IMAGE_TAG=... alone only renames the image (e.g. to the manifests' tag to
# try an unreleased build with deploy/ironlb.yaml).
IMAGE_REPO ?= ironlb/ironlb
IMAGE_TAG ?= $(VERSION)
IMAGE := $(IMAGE_REPO):$(IMAGE_TAG)
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
# Non-root by default. A non-root process gets no effective capabilities from
# a pod's capabilities.add (containerd sets no ambient set; checked with
# containerd 1.6), so the speaker, which needs NET_ADMIN and NET_RAW, must
# say runAsUser: 0 in its pod spec.
IMAGE_USER := 65532
# Times in the image are the commit's, so one commit always gives one digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# The control plane (kube-apiserver, etcd, kubectl) built from Go modules and
# cached outside the repository; the script prints its directory last.
ASSETS = $(shell bash hack/envtest-assets.sh | tail -n 1)
# The pinned Helm CLI the chart tests run, built from its Go module and
# cached the same way; the script prints the binary's path last.
HELM = $(shell bash hack/helm.sh | tail -n 1)

.PHONY: all build image generate chart-files deploy-manifest manifests check-generated helm envtest-assets test test-vm unit e2e e2e-cluster lint bench bench-controller bench-failover bench-forwarder bench-bgp bench-bgp-failover demo demo-bgp demo-keep clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ironlb .

## image: static ironlb binaries for IMAGE_PLATFORMS in bin/OS-ARCH/, then
## the image FROM scratch (binary at /ironlb, user 65532) as one tar,
## bin/ironlb-oci.tar; prints `image REF digest sha256:...`. No container
## daemon needed. Load it on a node with
## `ctr -n k8s.io images import bin/ironlb-oci.tar`, or `docker load -i`.
image:
	@if [ "$(IMAGE_TAG)" = latest ]; then echo "image: IMAGE_TAG=latest would hide which build runs; give a version" >&2; exit 1; fi
	@set -e; bins=(); for p in $(IMAGE_PLATFORMS); do \
	  os=$${p%%/*}; arch=$${p#*/}; out=bin/$$os-$$arch/ironlb; \
	  echo "go build $$out ($(VERSION))"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w -buildid= $(LDFLAGS)" -o $$out .; \
	  bins+=(-binary "$$p=$$out"); \
	done; \
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/image -ref "$(IMAGE)" -out bin/ironlb-oci.tar \
	  -entrypoint /ironlb -user $(IMAGE_USER) -label org.opencontainers.image.version=$(VERSION) "$${bins[@]}"

## generate: deepcopy functions and CRD manifests from the API types
generate:
	$(GO) tool controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(GO) tool controller-gen crd:crdVersions=v1 paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(GO) tool controller-gen rbac:roleName=ironlb-controller paths=./controllers/... output:rbac:artifacts:config=config/rbac
	$(GO) tool controller-gen rbac:roleName=ironlb-speaker paths=./speaker/ output:rbac:artifacts:config=config/rbac/speaker
	$(MAKE) --no-print-directory chart-files

## chart-files: copy the generated CRDs and roles into the Helm chart, which
## renders them from files/ (charts/ironlb/chart_test.go checks the copies)
chart-files:
	rm -rf charts/ironlb/files/crds charts/ironlb/files/rbac
	mkdir -p charts/ironlb/files/crds charts/ironlb/files/rbac
	cp config/crd/bases/*.yaml charts/ironlb/files/crds/
	cp config/rbac/role.yaml charts/ironlb/files/rbac/controller.yaml
	cp config/rbac/speaker/role.yaml charts/ironlb/files/rbac/speaker.yaml

## deploy-manifest: render config/default into deploy/ironlb.yaml
deploy-manifest:
	"$(ASSETS)/kubectl" kustomize config/default > deploy/ironlb.yaml

manifests: generate

## check-generated: fail when a generated file (CRDs, deepcopy, RBAC,
## deploy/ironlb.yaml) differs from what `make generate deploy-manifest`
## makes now; regenerates in a temporary copy, never in the working tree
check-generated:
	@ASSETS="$(ASSETS)" bash hack/check-generated.sh

envtest-assets:
	@bash hack/envtest-assets.sh

## helm: build the pinned Helm CLI (once) and print its path
helm:
	@bash hack/helm.sh

## test: every test: unit, against the real API server, and (as root) the
## privileged namespace and lab tests. Privileged tests skip, saying so, when
## not root. The lab packages (e2e/...) share the host address and measure
## timings, so they run one package at a time after the others, with nothing
## else running beside them.
LAB_PKGS := ./e2e/...
test: lint check-generated
	KUBEBUILDER_ASSETS="$(ASSETS)" IRONLB_HELM="$(HELM)" $(GO) test -count=1 -timeout 40m $$($(GO) list ./... | grep -v '/e2e')
	KUBEBUILDER_ASSETS="$(ASSETS)" IRONLB_HELM="$(HELM)" $(GO) test -p 1 -count=1 -timeout 40m $(LAB_PKGS)
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-vm; else echo "skipping the IPVS VM tests: they need root (apt-get, qemu)"; fi

## test-vm: the forwarder's IPVS tests inside Debian's kernel under qemu
## (this machine's kernel has no IPVS)
test-vm:
	bash hack/ipvs-vm.sh

unit:
	$(GO) test ./internal/... ./speaker/...

## e2e-cluster: only the real-cluster scenario (kubelets, containerd,
## kube-proxy in the lab, ironlb installed from deploy/ironlb.yaml; root
## required). `make test` and `make e2e` run it too.
e2e-cluster:
	KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) test -p 1 -count=1 -timeout 40m -v -run 'TestRealCluster' ./e2e/

## e2e: the namespace-lab scenarios (root required)
e2e:
	KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) test -p 1 -count=1 -timeout 30m -v ./e2e/...

## bench-failover: layer-2 failover in the lab (root), 20 trials per fault
## (kill -9, clean stop, link down); per fault prints the first request
## answered through the new owner (`l2-failover-request ...`), then the
## client's neighbour entry moved (`l2-failover fault=... n=20 p50_ms=... p99_ms=...`).
## A failed run prints the whole output and exits non-zero.
bench-failover:
	@out=$$(KUBEBUILDER_ASSETS="$(ASSETS)" IRONLB_FAILOVER_TRIALS=20 $(GO) test -count=1 -run 'TestLabL2SpeakerFailover' -v ./e2e/ 2>&1); rc=$$?; \
	if [ $$rc != 0 ]; then echo "$$out"; exit $$rc; fi; \
	echo "$$out" | grep -E 'l2-failover|^(ok|---)'

## bench-bgp: BGP mode against FRR in the lab (root), 50 Services: address
## assigned to route in the router's kernel table, and delete to withdrawal;
## prints `bgp-announce n=50 p50_ms=... p99_ms=... withdraw_p50_ms=...` last
bench-bgp:
	@out=$$(KUBEBUILDER_ASSETS="$(ASSETS)" IRONLB_BGP_BENCH_SERVICES=50 $(GO) test -count=1 -run 'TestLabBGPAnnounceBench' -v ./e2e/ 2>&1); rc=$$?; \
	if [ $$rc != 0 ]; then echo "$$out"; exit $$rc; fi; \
	echo "$$out" | grep -E 'bgp-announce-detail|^(ok|---)'; echo "$$out" | grep -oE 'bgp-announce n=.*'

## bench-bgp-failover: a node advertising an address fails (kill -9, link
## cut, clean stop), with BFD (300 ms x 3 and 50 ms x 3) and without, against
## FRR (root); prints `bgp-failover fault=... bfd=on|off profile=... n=20
## p50_ms=... p99_ms=...`: the time until the router's kernel table loses
## the node's next hop.
## Without BFD a cut link waits for the 90 s hold time: 2 trials only.
bench-bgp-failover:
	@out=$$(IRONLB_BGP_FAILOVER_TRIALS=20 IRONLB_BGP_FAILOVER_SLOW_TRIALS=2 $(GO) test -count=1 -timeout 60m -run 'TestFRRFailoverBench' -v ./speaker/bgp/ 2>&1); rc=$$?; \
	if [ $$rc != 0 ]; then echo "$$out"; exit $$rc; fi; \
	echo "$$out" | grep -E '^(bgp-failover|ok|---)'

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

## bench-forwarder: nftables forwarder in lab network namespaces (root):
## one TCP flow through the forwarder vs straight to the backend (ratios
## forwarded / direct, for throughput and for round-trip time; 1.0 = no
## cost), then sync of 10,000 services x 10 endpoints: full load of
## an empty table and one endpoint changed (mean of 5 each); prints last
## `forwarder-sync backend=nftables services=10000 one_change_ms=X full_ms=Y`
bench-forwarder:
	@{ $(GO) test -run '^$$' -bench 'BenchmarkNFTablesPath' -benchtime=2s ./speaker/forwarder/ && \
	$(GO) test -run '^$$' -bench 'BenchmarkNFTablesSync/services=10000/^(full_sync|one_change)$$' -benchtime=5x ./speaker/forwarder/; } | \
	awk '{ print } /path=direct\/throughput-/ { dt = $$5 } /path=forwarded\/throughput-/ { ft = $$5 } \
	/path=direct\/round_trip-/ { dr = $$3 } /path=forwarded\/round_trip-/ { fr = $$3 } \
	/\/full_sync-/ { full = $$3 / 1e6 } /\/one_change-/ { one = $$3 / 1e6 } \
	END { if (!full || !one || !dt || !ft || !dr || !fr) { print "bench-forwarder: no result (the benchmarks need root)"; exit 1 } \
	printf "forwarder-path backend=nftables throughput_ratio=%.2f round_trip_ratio=%.2f\n", ft / dt, fr / dr; \
	printf "forwarder-sync backend=nftables services=10000 one_change_ms=%.1f full_ms=%.0f\n", one, full }'

## bench-controller: 5,000 Services to all-assigned against the real API
## server, compared with a bare client writing the same status updates
bench-controller:
	KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) run ./e2e/benchcontroller -n 5000

demo:
	$(GO) run ./e2e/demo

demo-keep:
	$(GO) run ./e2e/demo --keep

## demo-bgp: the tour in BGP mode, FRR on the lab router (root)
demo-bgp:
	$(GO) run ./e2e/demo --bgp

clean:
	rm -rf bin
