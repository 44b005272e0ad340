# anomalyd — the one entry point for building, running and testing.
GO       ?= go
BIN      := bin/anomalyd
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 15s

.PHONY: build run test lint fuzz deps bench-ingest clean

## build: compile bin/anomalyd
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/anomalyd

## run: build and start anomalyd on the built-in defaults at 127.0.0.1:9700
run: build
	./$(BIN) --web.listen-address=127.0.0.1:9700

## deps: install what the tests need (Debian's prometheus and promtool)
deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus package for the end-to-end tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else \
	    echo "prometheus and promtool are needed: run 'sudo apt-get install -y prometheus'" >&2; exit 1; \
	  fi; \
	fi
	$(GO) mod download

## test: lint, unit tests and end-to-end tests against a real Prometheus,
## then the race detector over the packages that share memory between goroutines
test: deps lint
	$(GO) test -count=1 -timeout 9m ./...
	$(GO) test -race -count=1 -timeout 5m ./ingest ./window ./sink/...

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	@out=$$(find . -name '*.go' -not -path './bin/*' | xargs gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt -l is not empty:"; echo "$$out"; exit 1; fi

## fuzz: short fuzz runs of every decoder and parser (FUZZTIME each)
FUZZ_TARGETS := ingest:FuzzDecodeV1 ingest:FuzzDecodeV2 ingest:FuzzHandler \
	config:FuzzLoad config:FuzzParseSelector detectors:FuzzSetUpdate
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME); \
	done

## bench-ingest: the ingest-path micro-benchmark (100k series, 2000 samples a request)
bench-ingest:
	$(GO) test ./ingest -run '^$$' -bench '^BenchmarkIngest$$' -benchtime 20x -count 3

clean:
	rm -rf bin
