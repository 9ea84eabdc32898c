# Two commands for a newcomer: `make serve` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8080

export WARDROUND_PUBLIC_BASE_URL ?= http://127.0.0.1:$(PORT)

.PHONY: install serve test lint bench test-services

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# torch must stay the pinned CPU build: no CUDA wheels may sneak in.
	@if $(BIN)/python -m pip list 2>/dev/null | grep -i nvidia; then \
		echo "error: nvidia packages were installed (see above); torch must be the pinned CPU build" >&2; \
		exit 1; fi
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/cds db upgrade
	$(BIN)/cds demo setup >/dev/null
	@echo "Wardround on http://127.0.0.1:$(PORT) — JWT required; mint one with:"
	@echo "  $(BIN)/cds token mint http://127.0.0.1:$(PORT)/cds-services/patient-summary"
	@echo "Review page: http://127.0.0.1:$(PORT)/review  (user demo, password $$(cat instance/demo-reviewer.txt))"
	@echo "FHIR API: curl -H \"Authorization: Bearer \$$($(BIN)/cds api token --role auditor --audience http://127.0.0.1:$(PORT)/fhir)\" http://127.0.0.1:$(PORT)/fhir/AuditEvent"
	WARDROUND_SECRET_KEY=$${WARDROUND_SECRET_KEY:-$$(cat instance/demo-session-key)} \
		PORT=$(PORT) exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Real servers the adapter tests talk to (the tests start and stop them on free ports):
# sekmet-fhir, a FHIR R4 server, in its own venv; Orthanc with its DICOMweb plugin (Debian);
# Debian's chromium for the review page's browser tests; a Java runtime for Spark (the
# population tests start a standalone Spark cluster).
test-services: java
	bash scripts/test-services/install-sekmet.sh
	bash scripts/test-services/install-orthanc.sh
	bash scripts/test-services/install-chromium.sh

# Spark's JVM (pyspark ships the JARs; a Java 17+ runtime comes from Debian when missing).
.PHONY: java
java:
	bash scripts/test-services/install-java.sh

test: $(STAMP) test-services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Load benchmarks (wrk from Debian; needs the PostgreSQL server) → BENCHMARKS.md
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/run.py --seconds $(or $(BENCH_SECONDS),20)

# Time to build a PatientContext from prefetch and from the FHIR server (sekmet-fhir),
# every shared Synthea patient → BENCHMARKS.md ("PatientContext build").
.PHONY: bench-context
bench-context: $(STAMP) test-services
	$(BIN)/python benchmarks/patient_context.py

# order-sign latency with full prefetch and drug checks per second → BENCHMARKS.md.
.PHONY: bench-drug
bench-drug: $(STAMP)
	$(BIN)/python benchmarks/drug_safety.py

# Train the learned risk models on the shared Synthea patients (patient-level split) and
# regenerate their artifacts and model card (models/risk/MODEL_CARD.md): about a minute.
SHARED_DATA ?= $(or $(WARDROUND_SHARED_DATA),../shared/data)
.PHONY: models-risk
models-risk: $(STAMP)
	$(BIN)/cds models train cvd-event-3y acute-care-1y --data $(SHARED_DATA)/synthea-r4 \
		--out models/risk/artifacts --card models/risk/MODEL_CARD.md

# Fit the patient phenotypes on the shared Synthea patients and regenerate their artifact,
# model card / report (models/phenotypes/MODEL_CARD.md, model_card/*.png, report.html).
.PHONY: phenotypes
phenotypes: $(STAMP)
	$(BIN)/cds population phenotypes fit --data $(SHARED_DATA)/synthea-r4 --workers 2

# Phenotype fit (299 patients) and assignment (299 records, 10,000 cloned vectors), scikit-learn
# and Spark MLlib → BENCHMARKS.md ("Phenotypes").
.PHONY: bench-phenotypes
bench-phenotypes: $(STAMP)
	$(BIN)/python benchmarks/phenotypes.py

# Feature extraction + every risk model per patient-view → BENCHMARKS.md ("Risk models").
.PHONY: bench-risk
bench-risk: $(STAMP)
	$(BIN)/python benchmarks/risk_models.py
# AuditEvent search latency on PostgreSQL with 100,000 seeded CDS calls → BENCHMARKS.md.
.PHONY: bench-fhir
bench-fhir: $(STAMP)
	$(BIN)/python benchmarks/fhir_search.py --calls $(or $(CALLS),100000)

# A FHIR server with the shared Synthea patients on 127.0.0.1:8090, to try self-fetch.
.PHONY: demo-fhir
demo-fhir: $(STAMP) test-services
	$(BIN)/python scripts/demo_fhir_server.py --port $(or $(FHIR_PORT),8090)

# Long schemathesis run against a real gunicorn server; figures in BENCHMARKS.md ("Fuzzing").
FUZZ_CASES ?= 2400
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/run_fuzz.py --cases $(FUZZ_CASES)

# Soak (benchmarks/soak.py): a steady request rate for DURATION seconds (default 30 min)
# against its own PostgreSQL cluster and gunicorn, sampling worker RSS and p99 per window.
# Rate: RATE, else half of CAPACITY (req/s, e.g. from `make bench`), else 300 req/s.
# Appends the results to BENCHMARKS.md ("## Soak"); exits 1 if a pass criterion fails.
DURATION ?= 1800
.PHONY: soak
soak: $(STAMP)
	SOAK_COMMAND="DURATION=$(DURATION) $(if $(RATE),RATE=$(RATE) )$(if $(CAPACITY),CAPACITY=$(CAPACITY) )make soak" \
	$(BIN)/python -m benchmarks.soak --duration $(DURATION) \
		$(if $(RATE),--rate $(RATE)) $(if $(CAPACITY),--capacity $(CAPACITY)) \
		--label "$(or $(SOAK_LABEL),$(DURATION)-s run)" --benchmarks BENCHMARKS.md

# Report NLP (models/nlp): train on the IU reports, write the artifact and MODEL_CARD.md;
# `cds nlp evaluate` re-measures the shipped artifact. Needs the shared data.
.PHONY: nlp-model nlp-evaluate
nlp-model: $(STAMP)
	$(BIN)/cds nlp train
nlp-evaluate: $(STAMP)
	$(BIN)/cds nlp evaluate

# Report NLP speed and memory (150-word report cold/cached, batched reports/s, RSS) → BENCHMARKS.md.
.PHONY: bench-nlp
bench-nlp: $(STAMP)
	$(BIN)/python benchmarks/report_nlp.py
# Train the pneumonia CNN on PneumoniaMNIST (a few minutes on CPU, deterministic): writes
# models/imaging/artifacts/pneumonia-cxr/, models/imaging/MODEL_CARD.md and model_card/roc.png.
.PHONY: models-imaging
models-imaging: $(STAMP)
	$(BIN)/cds imaging train

# pneumonia-cxr per image on one core (decode + preprocess + inference, with and without
# the DICOMweb fetch from Orthanc) and peak memory → BENCHMARKS.md.
.PHONY: bench-imaging
bench-imaging: $(STAMP) test-services
	$(BIN)/python benchmarks/imaging.py
# Population jobs on Spark: the shared Synthea patients as bulk NDJSON, then their record
# rows (Parquet) through `cds population records` (local[*]; MASTER=spark://… for a
# cluster), into instance/population/. The run is recorded in the audit log.
POPULATION  := instance/population
SYNTHEA_NDJSON := $(POPULATION)/synthea-ndjson
# The shared Synthea bundles as bulk NDJSON, converted once (the population jobs' input).
$(SYNTHEA_NDJSON): | $(STAMP)
	$(BIN)/cds population convert $(SHARED_DATA)/synthea-r4 $(SYNTHEA_NDJSON)

.PHONY: population-records
population-records: $(STAMP) java | $(SYNTHEA_NDJSON)
	$(BIN)/cds db upgrade
	rm -rf $(POPULATION)/records
	$(BIN)/cds population records $(SYNTHEA_NDJSON) --out $(POPULATION)/records \
		--master '$(or $(MASTER),local[*])'

# Every shared Synthea patient scored with the learned risk models through Spark
# (`cds population score`: record rows, features, mapInPandas scoring) into
# instance/population/scores/: Parquet scores and RiskAssessment NDJSON (fhir/). As of
# AS_OF (default 2020-06-30: the shared records end in 2020-21). Audited like records.
.PHONY: population-score
population-score: $(STAMP) java | $(SYNTHEA_NDJSON)
	$(BIN)/cds db upgrade
	rm -rf $(POPULATION)/scores
	$(BIN)/cds population score $(SYNTHEA_NDJSON) --out $(POPULATION)/scores \
		--master '$(or $(MASTER),local[*])' --as-of $(or $(AS_OF),2020-06-30)

# A learned risk model (MODEL, default acute-care-1y) trained on Spark from every shared
# Synthea patient (`cds population train`: the training data set in Spark SQL,
# xgboost.spark, the single-machine trainer's calibration, metrics and artifact) into
# instance/population/trained/<model>/ (load with models.risk.learned.load). Audited.
.PHONY: population-train
population-train: $(STAMP) java | $(SYNTHEA_NDJSON)
	$(BIN)/cds db upgrade
	rm -rf $(POPULATION)/trained
	$(BIN)/cds population train $(SYNTHEA_NDJSON) --out $(POPULATION)/trained \
		--model $(or $(MODEL),acute-care-1y) --master '$(or $(MASTER),local[*])'

# Bulk read + record rows at 600 / 10,000 / 100,000 patients (synthetic clones, generated
# once into instance/bench-population/): single-process Python, Spark local[2] and a
# two-worker standalone cluster on 127.0.0.1 → BENCHMARKS.md ("Population").
.PHONY: bench-population
bench-population: $(STAMP) java
	$(BIN)/python benchmarks/population.py $(if $(SIZES),--sizes $(SIZES)) \
		$(if $(PATHS),--paths '$(PATHS)')

# RiskAssessments posted back to sekmet-fhir per second, by transaction size (the
# RiskAssessments of `make population-score`, run first when missing) → BENCHMARKS.md.
.PHONY: bench-post-back
bench-post-back: $(STAMP) java test-services
	test -d $(POPULATION)/scores/fhir || $(MAKE) population-score
	$(BIN)/python benchmarks/post_back.py --scores $(POPULATION)/scores

# The Python path's by-patient reader alone (read_records: lines spilled to patient buckets,
# one bucket grouped at a time) at 600 / 10,000 / 100,000 patients → BENCHMARKS.md.
.PHONY: bench-population-read
bench-population-read: $(STAMP)
	$(BIN)/python benchmarks/population.py --job read --paths python $(if $(SIZES),--sizes $(SIZES))

# Bulk read + features + risk scoring at 600 and 10,000 patients (100,000: SIZES=…; PATHS=… picks paths;
# STOP_AFTER=seconds stops the python path early, a partial row):
# the hook path per patient, Spark local[2] and the two-worker cluster → BENCHMARKS.md.
.PHONY: bench-population-score
bench-population-score: $(STAMP) java
	$(BIN)/python benchmarks/population.py --job score --sizes $(or $(SIZES),600,10000) \
		$(if $(PATHS),--paths '$(PATHS)') $(if $(STOP_AFTER),--stop-after $(STOP_AFTER))
