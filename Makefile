# ambient-agent: build, test, lint, demo. `make test` and `make demo` need root
# (network namespaces, nftables); see README.md.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -X github.com/ambient-agent/ambient-agent/agent/internal/app.Version=$(VERSION)
BIN     := bin/ambient-agent

.PHONY: generate build test unit lint demo clean tools fuzz soak

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./agent/cmd/ambient-agent

# Everything CI runs: unit tests, the netns lab and the real-peer tests, the
# interop module (Istio's own HBONE code; its own go.mod) and short fuzz runs.
FUZZTIME ?= 10s
FUZZ     := ./agent/internal/hbone:FuzzParseAuthority ./agent/internal/hbone:FuzzServerFrames \
            ./agent/internal/policy:FuzzParse ./agent/internal/discovery:FuzzDecodeRecord \
            ./agent/internal/discovery:FuzzReceive ./agent/internal/dns:FuzzServeDNS \
            ./agent/internal/xds:FuzzDecode ./agent/internal/xds:FuzzDecodeResponse ./agent/internal/pbwire:FuzzEach \
            ./agent/internal/proxy:FuzzGatewayTarget ./agent/internal/proxy:FuzzWaypointRequest \
            ./agent/internal/policy:FuzzXDS ./agent/internal/routes:FuzzRoute ./agent/internal/config:FuzzParse

test: tools
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -tags scaleharness -run '^TestScale' ./agent/internal/app
	$(GO) test -count=1 -tags scaleharness -run '^TestSpreadModel$$' ./agent/internal/discovery
	cd tests/interop && $(GO) test -count=1 -timeout 20m ./...
	@for f in $(FUZZ); do pkg=$${f%%:*}; fn=$${f##*:}; \
		echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		fuzz() { $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg >/tmp/fuzz-$$fn.log 2>&1; }; \
		if ! fuzz; then \
			if grep -qx '    context deadline exceeded' /tmp/fuzz-$$fn.log && [ -z "$$(git status --porcelain $$pkg/testdata/fuzz/$$fn)" ]; then \
				echo "fuzz $$fn: Go's -fuzztime race (golang/go#75804, fixed in Go 1.27), no crasher written: once more"; \
				fuzz || { cat /tmp/fuzz-$$fn.log; exit 1; }; \
			else cat /tmp/fuzz-$$fn.log; exit 1; fi; \
		fi; \
	done

# Every fuzz target of the module, FUZZTIME each (default 1m here), one after the other: a table of the CPU
# time, executions and new corpus entries of each (also in fuzz-report.md); a crasher fails it. FUZZ_ONLY=<regexp>
# picks targets. `make test` runs the FUZZ list above for 10s each.
fuzz:
	FUZZTIME=$(if $(filter command line,$(origin FUZZTIME)),$(FUZZTIME),1m) GO=$(GO) tests/tools/fuzz.sh

# The soak (docs/reliability.md): SOAK of checked traffic under random faults (default 30m; `make test` runs 2m),
# seeded by SOAK_SEED (default: the time, printed). Its table and JSON go to soak-report.md and soak-report.json,
# the whole log (the agents' too, on failure) to soak-report.log.
SOAK ?= 30m
soak:
	SOAK=$(SOAK) SOAK_SEED=$(SOAK_SEED) SOAK_REPORT=$(CURDIR)/soak-report $(GO) test -count=1 -timeout 3h -run '^TestSoak$$' -v ./tests/e2e/ \
		>soak-report.log 2>&1; rc=$$?; grep -v 'level=' soak-report.log; exit $$rc

# Slow-to-build test tools (real SPIRE), cached outside the repository
# ($$AMBIENT_TOOLS_CACHE, default ~/.cache/ambient-agent): only the first run pays.
tools:
	tests/tools/build-spire.sh >/dev/null

# Unit tests only (no root needed; lab tests skip outside CI).
unit:
	$(GO) test -count=1 ./agent/... ./nft/...

# The man page and the shell completions, generated from the command table (TestGeneratedFilesAreCurrent checks them).
generate:
	$(GO) run ./agent/cmd/ambient-agent help -man > packaging/ambient-agent.8
	for sh in bash zsh fish; do \
		f=packaging/completion/ambient-agent.$$sh; [ $$sh = zsh ] && f=packaging/completion/_ambient-agent; \
		$(GO) run ./agent/cmd/ambient-agent completion $$sh > $$f || exit 1; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags scaleharness ./agent/internal/app ./agent/internal/proxy ./agent/internal/discovery ./agent/internal/xds ./agent/internal/policy
	$(GO) test -count=1 -run '^TestPortLiteralsOnlyInPorts$$' ./tests/archtest

# A small mesh of lab hosts on this machine; Ctrl-C stops it and cleans up.
demo:
	$(GO) run ./tests/demo

clean:
	rm -rf bin

# Packages and the tarball installer (docs/install.md), built by packaging/build.sh into $(DIST):
#   make deb rpm tarball      ambient-agent_<version>-<release>_<arch>.deb/.rpm, ambient-agent_<version>_linux_<arch>.tar.gz
#   make apt-repo             $(DIST)/apt: a flat apt repository (deb [trusted=yes] file:$(DIST)/apt ./), for tests
#   make release-repos KEY=<fingerprint>   $(DIST)/repos: signed apt and dnf repositories, the keyring packages and
#                             signed SHA256SUMS of the tarballs, with the operator's OpenPGP key (GNUPGHOME)
# The version comes from the latest v* tag (packaging/version.sh); override: make deb PKG_VERSION=1.2.3.
# Lint them with packaging/lint.sh $(DIST)/*.deb $(DIST)/*.rpm.
ifeq ($(origin PKG_VERSION),undefined)
PKG_VERSION := $(shell packaging/version.sh)
endif
PKG_RELEASE ?= 1
PKG_ARCHS   ?= amd64 arm64
DIST        ?= dist

.PHONY: deb rpm tarball apt-repo release-repos

deb rpm tarball:
	PKG_RELEASE=$(PKG_RELEASE) packaging/build.sh -v "$(PKG_VERSION)" -a "$(PKG_ARCHS)" -o $(DIST) $@ >/dev/null

apt-repo: deb
	packaging/apt-repo.sh $(DIST)/apt $(foreach a,$(PKG_ARCHS),$(DIST)/ambient-agent_$(PKG_VERSION)-$(PKG_RELEASE)_$(a).deb)

release-repos: deb rpm tarball
	@test -n "$(KEY)" || { echo "make release-repos: give the signing key: KEY=<fingerprint> (in GNUPGHOME)"; exit 2; }
	packaging/release-repos.sh -k "$(KEY)" -o $(DIST)/repos \
		$(foreach a,$(PKG_ARCHS),$(DIST)/ambient-agent_$(PKG_VERSION)-$(PKG_RELEASE)_$(a).deb \
		$(DIST)/ambient-agent_$(PKG_VERSION)-$(PKG_RELEASE)_$(a).rpm $(DIST)/ambient-agent_$(PKG_VERSION)_linux_$(a).tar.gz)

# Data-path benchmarks on the netns lab (root; needs iperf3 and nft): throughput, latency, connection rate, CPU and
# memory, direct vs meshed vs Istio's Go HBONE (docs/benchmarks.md). `make bench QUICK=1` is the smoke run (under a
# minute). BENCH_OUT is the JSON results file; BENCH_FLAGS adds flags: -rounds N, -profile DIR, -agent BIN, -markdown.
BENCH_OUT   ?= tests/bench/results.json
BENCH_FLAGS ?=

.PHONY: bench
bench:
	$(GO) run ./tests/bench/cmd/bench $(if $(QUICK),-quick) -out $(BENCH_OUT) $(BENCH_FLAGS)

# The control plane's costs against mesh size (docs/scale.md): the agent's own update path, per-connection lookups
# and heap, in-process at 1,000, 10,000 and 50,000 workloads, policy decisions among 10,003 policies, and how changes
# spread through gossip pools (measured at 50 to 200 members, modelled to 5,000), then the tables. About 25 minutes.
# SCALE_BENCHTIME: changes per update-path benchmark.
SCALE_BENCHTIME ?= 20x

.PHONY: bench-scale
bench-scale: SHELL := /bin/bash
bench-scale:
	set -o pipefail; { $(GO) test -tags scaleharness -run '^$$' -bench Scale -benchtime $(SCALE_BENCHTIME) ./agent/internal/app && \
		$(GO) test -tags scaleharness -run '^$$' -bench Scale ./agent/internal/proxy && \
		$(GO) test -tags scaleharness -run '^$$' -bench 'ScalePolicy$$' ./agent/internal/policy && \
		$(GO) test -tags scaleharness -run '^$$' -bench 'ScalePolicyCold' -benchtime 300x ./agent/internal/policy && \
		$(GO) test -tags scaleharness -run '^$$' -bench 'ScalePool(Spread|Churn)$$' -benchtime 1x ./agent/internal/discovery; } | \
		$(GO) run ./tests/bench/cmd/scaletable
