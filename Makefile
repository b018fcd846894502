# One entry point for people and CI. `make demo` and `make test` set everything up themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= disabled
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONUNBUFFERED := 1

.PHONY: install demo detector-demo test lint benchmark benchmark-thresholds quality ui-check clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The README demo: a smoke sweep with in-process Ray, a local MLflow store and synthetic data.
demo: install
	$(BIN)/asd sweep --space search_spaces/smoke.yaml --promote
	@echo "browse it: $(BIN)/mlflow ui --backend-store-uri sqlite:///$$(pwd)/asd-work/mlflow.db"
	@echo "then open the 'MLflow UI:' link above (it opens the sweep in the model-training view)"

# The detector alone: synthesise, train, evaluate with both estimators.
detector-demo: install
	$(BIN)/asd data synth --out asd-work/synthetic
	$(BIN)/asd train --data asd-work/synthetic --preset smoke --out asd-work/runs/detector-demo
	$(BIN)/asd evaluate --data asd-work/synthetic --encoder asd-work/runs/detector-demo \
		--estimator both --out asd-work/runs/detector-demo/evaluation
	$(BIN)/asd evaluate --data asd-work/synthetic --embedding mean-logmel

lint: install
	$(BIN)/ruff check asd tests benchmarks jobs
	$(BIN)/mypy asd

test: install lint
	$(BIN)/pytest -q -ra

benchmark: install
	$(BIN)/python benchmarks/run.py

# Detection quality (not in CI): references vs learned detectors, tuned vs held-out machine types.
# QUALITY_ARGS=--size dcase --device cuda on a GPU; the default 'cpu' size fits a 2-core CPU.
quality: install
	$(BIN)/python benchmarks/quality.py $(QUALITY_ARGS)

# Out-of-fold vs in-sample decision thresholds and the untrained references (no training).
benchmark-thresholds: install
	$(BIN)/python benchmarks/thresholds.py

# What a user sees in the MLflow UI (not in CI: a smoke sweep plus a browser, minutes): renders the
# experiment, the sweep, a trial and the registered model in headless Chromium (apt-get install -y
# chromium), checks them from the DOM, screenshots in asd-work/ui-check/. UI_ARGS=--workdir DIR.
ui-check: install
	$(BIN)/python benchmarks/ui_check.py $(UI_ARGS)

clean:
	rm -rf asd-work .pytest_cache
