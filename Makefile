# Praxis — build, run, test, bench. Everything builds with -tags goolm:
# mautrix-go's pure-Go Olm (libolm is not installed anywhere).
GO      ?= go
TAGS    := goolm
BIN     := bin
DATA    ?= ./data

.PHONY: all build run test test-short vet bench clean

all: build

build:
	$(GO) build -tags $(TAGS) -o $(BIN)/ ./cmd/...

# Starts a homeserver on SQLite in $(DATA); the first start writes
# $(DATA)/praxis.yaml and the signing key.
run: build
	$(BIN)/praxis --config $(DATA)/praxis.yaml

vet:
	$(GO) vet -tags $(TAGS) ./...

# go vet, then every test with the race detector. The PostgreSQL variants
# run when PRAXIS_TEST_POSTGRES is set (.ci/run starts a cluster).
test: vet
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -tags $(TAGS) -count=1 -short ./...

# Benchmark program against the real binary (see docs/performance.md).
bench: build
	$(GO) run -tags $(TAGS) ./cmd/praxisbench --binary $(BIN)/praxis

clean:
	rm -rf $(BIN)
