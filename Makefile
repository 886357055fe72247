# Praxis — build, run, test, bench. Everything builds with -tags goolm:
# mautrix-go's pure-Go Olm (libolm is not installed anywhere).
GO      ?= go
TAGS    := goolm
BIN     := bin
DATA    ?= ./data

.PHONY: all build run test test-short vet bench bench-components clean

all: build

build:
	$(GO) build -tags $(TAGS) -o $(BIN)/ ./cmd/...

# Starts a homeserver on SQLite in $(DATA); the first start writes
# $(DATA)/praxis.yaml and the signing key.
run: build
	$(BIN)/praxis --config $(DATA)/praxis.yaml

# go vet, and every Go file formatted as gofmt writes it.
vet:
	$(GO) vet -tags $(TAGS) ./...
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted (run gofmt -w):"; echo "$$unformatted"; exit 1; fi

# go vet, then every test with the race detector. The PostgreSQL variants
# run when PRAXIS_TEST_POSTGRES is set (.ci/run starts a cluster).
test: vet
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -tags $(TAGS) -count=1 -short ./...

# Benchmark program against the real binary (see docs/performance.md).
bench: build
	$(GO) run -tags $(TAGS) ./cmd/praxisbench --binary $(BIN)/praxis
	$(MAKE) bench-components

# The component benchmarks of the end-to-end key server (upload, claim,
# query of 50 users, to-device fan-out p99), media (1 MiB upload/download
# with 4 clients, thumbnails) and the TURN relay (20 relayed calls: loss,
# latency, cores). About a minute and a half.
bench-components:
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -count=1 ./crypto/keyserver ./internal/media ./internal/call/turn

clean:
	rm -rf $(BIN)
