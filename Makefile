# Two commands for a newcomer: `make serve` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8080

export WARDROUND_PUBLIC_BASE_URL ?= http://127.0.0.1:$(PORT)

.PHONY: install serve test lint clean-instance

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
	PORT=$(PORT) exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
