# anomalyd — the one entry point for building, running and testing.
GO       ?= go
BIN      := bin/anomalyd
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
BRANCH   ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null)
# One version source: github.com/prometheus/common/version, as every
# Prometheus component; anomalyd_build_info, --version and the User-Agent read it.
VERSION_PKG := github.com/prometheus/common/version
LDFLAGS  := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Revision=$(REVISION) -X $(VERSION_PKG).Branch=$(BRANCH) \
	-X $(VERSION_PKG).BuildUser=$(shell id -un 2>/dev/null)@$(shell hostname 2>/dev/null) \
	-X $(VERSION_PKG).BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
FUZZTIME ?= 15s
BENCH_ADDR ?= 127.0.0.1:19800
FLOOR_ADDR ?= 127.0.0.1:19801
BENCH_OUT  ?= bench/results
LOAD_FLAGS ?= -series 100000 -duration 20s
LOAD       := bin/load

.PHONY: build run test test-accuracy lint fuzz deps vmagent demo bench bench-nab bench-incidents bench-faults bench-warmup bench-prometheus bench-victoriametrics bench-vmagent bench-ingest bench-load bench-floor clean

## build: compile bin/anomalyd
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/anomalyd

## run: build and start anomalyd on the built-in defaults at 127.0.0.1:9700
run: build
	./$(BIN) --web.listen-address=127.0.0.1:9700

## deps: install what the tests need (Debian's prometheus and promtool, chromium for the page's
## test, and bin/vmagent)
deps: vmagent
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus and chromium packages for the end-to-end tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium fonts-dejavu-core; \
	  else \
	    echo "prometheus, promtool and chromium are needed: run 'sudo apt-get install -y prometheus chromium'" >&2; exit 1; \
	  fi; \
	fi
	$(GO) mod download

# bin/vmagent: the vmagent the scale-out test (cmd/anomalyd/e2e, TestVmagentShardE2E) puts in front of
# several anomalyd instances, built from its module at VMAGENT_VERSION when bin/vmagent is missing or
# another version (the stamp file bin/.vmagent-VERSION says which). Not Debian's victoria-metrics
# package: its vmagent (1.79) predates -remoteWrite.shardByURL, which the deploy/vmagent recipe needs.
# Not in go.mod either: vmagent is a program the tests run, not a dependency of anomalyd.
VMAGENT_VERSION ?= v1.151.0
vmagent:
	@if [ ! -x bin/vmagent ] || [ ! -f bin/.vmagent-$(VMAGENT_VERSION) ]; then \
	  echo "building bin/vmagent $(VMAGENT_VERSION) for the scale-out tests"; \
	  mkdir -p bin && rm -f bin/vmagent bin/.vmagent-* && \
	  GOBIN=$(abspath bin) $(GO) install github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent@$(VMAGENT_VERSION) && \
	  touch bin/.vmagent-$(VMAGENT_VERSION); \
	fi

## test: lint, unit tests and end-to-end tests against a real Prometheus,
## then the race detector over the packages that share memory between goroutines.
## Needs nothing outside the repository but what deps installs.
test: deps lint
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) test -race -count=1 -timeout 5m ./ingest/... ./window/... ./sink/...

## test-accuracy: the tests over external corpora (NAB in ../shared/datasets/nab, or NAB_DIR),
## built with -tags accuracy so that make test does not need them
test-accuracy:
	NAB_DIR=$(abspath $(NAB_DIR)) $(GO) test -tags accuracy -count=1 -timeout 15m -run 'Accuracy|Real|Scoreboard' ./...

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	$(GO) vet -tags accuracy ./...
	@out=$$(find . -name '*.go' -not -path './bin/*' | xargs gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt -l is not empty:"; echo "$$out"; exit 1; fi

## fuzz: short fuzz runs of every decoder and parser (FUZZTIME each)
FUZZ_TARGETS := ingest:FuzzDecodeV1 ingest:FuzzDecodeV2 ingest:FuzzHandler \
	config:FuzzLoad config:FuzzParseSelector detectors:FuzzSetUpdate detectors:FuzzRestoreState \
	window/backtest:FuzzBacktestScore \
	sink/history:FuzzReadHandler ingest/remoteread:FuzzDecodeStreamed ingest/remoteread:FuzzDecodeSamples \
	window:FuzzIncidentsRestore window:FuzzRestoreSeries window/incident:FuzzGroup window/incident:FuzzRestoreGroup window/checkpoint:FuzzReader \
	sink/remotewrite:FuzzDiskQueueOpen
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME); \
	done

## bench-warmup: warm-up throughput from a real Prometheus (1000 series × 1 day at 60 s)
bench-warmup:
	$(GO) test -count=1 ./cmd/anomalyd/e2e -run '^$$' -bench '^BenchmarkWarmupThroughput$$' -benchtime 1x -v

## bench-ingest: the ingest-path micro-benchmark (100k series, 2000 samples a request)
bench-ingest:
	$(GO) test ./ingest -run '^$$' -bench '^BenchmarkIngest$$' -benchtime 20x -count 3

## bench-nab: NAB v1.1 accuracy: backtest every detector over the NAB corpus (shared/ beside the
## repository), then score them all beside NAB's published scoreboard (JSON in bench/results)
NAB_DIR       ?= ../shared/datasets/nab
NAB_DETECTORS ?= ewma zscore holtwinters slope entropy combined
NAB_OUT       ?= $(BENCH_OUT)/nab

bench-nab: build
	@set -e; for d in $(NAB_DETECTORS); do \
	  rm -rf "$(NAB_OUT)/$$d"; \
	  ./$(BIN) backtest --input $(NAB_DIR)/data --output $(NAB_OUT)/$$d --detector $$d; \
	done; rm -rf "$(NAB_OUT)/combined-no-entropy"; \
	./$(BIN) backtest --input $(NAB_DIR)/data --output $(NAB_OUT)/combined-no-entropy --detector combined \
	  --config.file bench/nab/no-entropy.yml
	$(GO) run ./bench/nab -data $(NAB_DIR)/data -labels $(NAB_DIR)/labels/combined_windows.json \
	  $(foreach d,$(NAB_DETECTORS) combined-no-entropy,-results $(NAB_OUT)/$(d)) \
	  -alert 'combined:>=2' -alert 'combined:>1 for 5m' \
	  -baseline null,random -json $(BENCH_OUT)/nab.json

## bench-incidents: the incident stage on a data set with service-level incident labels
## (jumpstarter in ../shared/datasets/jumpstarter, or JS_DIR): anomalyd backtest groups each service's
## series and writes its incidents.csv; bench/incidents scores them (JSON in bench/results), then the
## data set's score.py gives the per-series rules beside them: any series alarming, and 2 within 5 minutes
JS_DIR  ?= ../shared/datasets/jumpstarter
JS_OUT  ?= $(BENCH_OUT)/incidents/jumpstarter

bench-incidents: build
	@rm -rf "$(JS_OUT)"
	./$(BIN) backtest --input $(JS_DIR)/data --output $(JS_OUT)
	$(GO) run ./bench/incidents -dataset $(JS_DIR) -results $(JS_OUT) -json $(BENCH_OUT)/incidents.json
	@echo; echo "per-series alarms, any series of a service (score.py):"
	python3 $(JS_DIR)/score.py $(JS_OUT)
	@echo; echo "per-series alarms, 2 series within 5 minutes (score.py --k 2 --w 5):"
	python3 $(JS_DIR)/score.py $(JS_OUT) --k 2 --w 5

## bench-faults: the default detectors on this machine's real metrics (node_exporter, Prometheus's own
## and a loaded HTTP service's RED metrics, scraped every second by a real Prometheus that remote-writes
## to anomalyd and stores its scores), with stress-ng and service faults at known times: false alarms per 1000 series-hours while nothing happens, and
## what fires during each fault, for AnomalyDetected and for every alert of
## deploy/prometheus/anomalyd-alerts.yml's score group (AnomalySustained); and the incident stage: whether
## each fault opens an incident on its own target within 3 samples (GET /api/v1/incidents, AnomalyIncident),
## false incidents per target-hour. ~47 minutes; the machine must be otherwise idle. JSON in
## bench/results/faults.json. FAULTS_FLAGS to change it, e.g. FAULTS_FLAGS="-quiet 35m" (go run ./bench/faults -h);
## FAULTS_FLAGS="-export DIR" also writes the run's input series, which go run ./bench/faults -replay DIR
## scores again offline through anomalyd backtest (-anomalyd-config FILE to try incident settings).
FAULTS_FLAGS ?=
bench-faults: build
	@for p in prometheus prometheus-node-exporter stress-ng; do \
	  command -v $$p >/dev/null 2>&1 && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus prometheus-node-exporter stress-ng; break; \
	  else \
	    echo "$$p is needed: run 'sudo apt-get install -y prometheus prometheus-node-exporter stress-ng'" >&2; exit 1; \
	  fi; \
	done
	$(GO) run ./bench/faults -anomalyd $(BIN) -out $(BENCH_OUT) $(FAULTS_FLAGS)

## demo: anomalyd plus a real-time load of 300 series with an anomaly about once a minute
demo: build $(LOAD)
	@mkdir -p $(BENCH_OUT)
	@bench/demo.sh

## bench: the standard load scenario: 100k series, 20 s after 2 warm-up rounds, 3 fresh runs each
## against anomalyd (default detectors) and the decode-only floor; median (min–max), JSON in bench/results
BENCH_RUNS ?= 3
bench: build $(LOAD)
	$(GO) run ./bench/standard -anomalyd $(BIN) -load $(LOAD) -runs $(BENCH_RUNS) -out $(BENCH_OUT) \
	  -load-flags "$(LOAD_FLAGS) -warmup-rounds 2"

## bench-vmagent: end-to-end throughput and CPU of the deploy/vmagent recipe (bench/load -> vmagent ->
## 2 anomalyd) against bench/load -> one anomalyd, alternating, 3 fresh runs each; summary in
## bench/results/vmagent.txt. Variables of bench/vmagent.sh: RUNS, SERIES, ROUNDS, INSTANCES.
bench-vmagent: build $(LOAD) vmagent
	@mkdir -p $(BENCH_OUT)
	OUT=$(BENCH_OUT)/vmagent.txt bench/vmagent.sh

## bench-load: bench/load against bin/anomalyd started fresh on 127.0.0.1 (JSON in bench/results)
## bench-floor: the same load against the decode-only floor receiver

$(LOAD): FORCE
	$(GO) build -o $(LOAD) ./bench/load

bench-load: build $(LOAD)
	@mkdir -p $(BENCH_OUT)
	@data=$$(mktemp -d); ./$(BIN) --web.listen-address=$(BENCH_ADDR) --log.level=warn --storage.path=$$data & pid=$$!; \
	trap 'kill $$pid; wait $$pid; rm -rf $$data' EXIT; \
	./$(LOAD) -url http://$(BENCH_ADDR)/api/v1/write -metrics-url http://$(BENCH_ADDR)/metrics \
	  -pid $$pid -out $(BENCH_OUT)/load-anomalyd.json $(LOAD_FLAGS)

bench-floor: $(LOAD)
	@mkdir -p $(BENCH_OUT)
	@./$(LOAD) floor -listen $(FLOOR_ADDR) & pid=$$!; \
	trap 'kill $$pid; wait $$pid' EXIT; \
	./$(LOAD) -url http://$(FLOOR_ADDR)/api/v1/write -metrics-url http://$(FLOOR_ADDR)/metrics \
	  -delay-metrics bench_floor_samples_total -pid $$pid -out $(BENCH_OUT)/load-floor.json $(LOAD_FLAGS)

## bench-prometheus / bench-victoriametrics: the same load against Debian's prometheus (remote-write
## receiver) and victoria-metrics, to compare anomalyd's cost with stores users already run
## (apt-get install -y prometheus victoria-metrics)
bench-prometheus: $(LOAD)
	@mkdir -p $(BENCH_OUT)
	@d=$$(mktemp -d); printf 'global: {scrape_interval: 1h}\n' > $$d/prometheus.yml; \
	prometheus --config.file=$$d/prometheus.yml --storage.tsdb.path=$$d/data --web.listen-address=$(BENCH_ADDR) \
	  --web.enable-remote-write-receiver --log.level=warn & pid=$$!; \
	trap 'kill $$pid; wait $$pid; rm -rf '$$d EXIT; \
	./$(LOAD) -url http://$(BENCH_ADDR)/api/v1/write -pid $$pid -out $(BENCH_OUT)/load-prometheus.json $(LOAD_FLAGS)

bench-victoriametrics: $(LOAD)
	@mkdir -p $(BENCH_OUT)
	@d=$$(mktemp -d); \
	victoria-metrics -storageDataPath=$$d -httpListenAddr=$(BENCH_ADDR) -loggerLevel=ERROR & pid=$$!; \
	trap 'kill $$pid; wait $$pid; rm -rf '$$d EXIT; \
	./$(LOAD) -url http://$(BENCH_ADDR)/api/v1/write -pid $$pid -out $(BENCH_OUT)/load-victoriametrics.json $(LOAD_FLAGS)

FORCE:

clean:
	rm -rf bin
