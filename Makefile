# The two commands of the README: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
MODEL_DIR ?= models

.PHONY: run test lint data model bench bench-quick bench-10m system clean

# the packages are installed by uv (its version pinned here) into the venv Python makes: the pinned versions in half
# of pip's time. uv reads its own settings (UV_DEFAULT_INDEX, UV_CONSTRAINT), not pip's. Compiled as they are
# installed: PYTHONDONTWRITEBYTECODE, when set, keeps every later process from writing what it compiles, and a
# test's subprocess would compile pandas again at every start.
UV_VERSION := 0.13.10
UV := $(PY) -m uv pip install --quiet --python $(PY)
$(VENV)/.uv-$(UV_VERSION):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	touch $@

# the project is installed into the venv (editable), so that every program of the venv imports clv wherever it
# is started: a `dask worker` in another folder, a notebook, a test's subprocess
$(VENV)/.runtime: requirements.txt pyproject.toml $(VENV)/.uv-$(UV_VERSION)
	$(UV) --compile-bytecode -r requirements.txt
	$(UV) --no-deps --editable .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(UV) --compile-bytecode -r requirements-dev.txt
	touch $@

## run: set up, generate the default data and train a model if there is none, serve http://127.0.0.1:8000
run: $(VENV)/.runtime
	@test -f $(DATA_DIR)/transactions.csv || $(PY) data_gen.py --out $(DATA_DIR)
	CLV_DATA_DIR=$(DATA_DIR) CLV_MODEL_DIR=$(MODEL_DIR) $(PY) api.py

## data: (re)generate the default synthetic bank under data/
data: $(VENV)/.runtime
	$(PY) data_gen.py --out $(DATA_DIR)

## model: train a model on data/ into models/
model: $(VENV)/.runtime
	@test -f $(DATA_DIR)/transactions.csv || $(PY) data_gen.py --out $(DATA_DIR)
	$(PY) model.py train --data-dir $(DATA_DIR) --model-dir $(MODEL_DIR)

## system: Debian's packages the tests drive: chromium (the page), redis-server (a shared rate limit), npm (the
## page's linter) and postgresql (a bank in a warehouse; its binaries live in /usr/lib/postgresql/<version>/bin);
## installed with apt-get when missing, never a browser download
system:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing; run 'sudo apt-get install$$missing'" >&2; exit 1; fi; \
	fi

# the page's linter, Biome, at the version package-lock.json pins: installed again whenever the lock is newer than
# the install (npm ci writes node_modules/.package-lock.json)
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: run 'sudo apt-get install npm', then make again" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

## lint: ruff on the Python, Biome on the page's modules (static/*.js; biome.json: lint only, the formatter is off)
lint: $(VENV)/.dev node_modules/.package-lock.json
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	npx --no-install biome check --error-on-warnings static

## test: set up, lint, and run the whole test suite (browser, Redis and Dask cluster tests included), a test file
## per core (pytest-xdist)
test: $(VENV)/.dev system lint
	$(PY) -m pytest -n 2 --dist loadfile

## docs: regenerate docs/cli.md and docs/settings.md from the parsers and Settings (tests/test_docs.py holds them to it)
.PHONY: docs
docs: $(VENV)/.runtime
	$(PY) docs/reference.py

## bench: print the speed and memory figures of the issues' targets (bench_scale alone takes many minutes)
bench: $(VENV)/.dev
	$(PY) bench/bench_data_gen.py
	$(PY) bench/bench_model.py
	$(PY) bench/bench_score.py
	$(PY) bench/bench_api.py
	$(PY) bench/bench_reload.py
	$(PY) bench/bench_scale.py

## bench-10m: ten million customers generated, trained on and scored with the portfolio, stage by stage (about 34 GB
## of disk, checked first; half an hour or more on 2 cores)
bench-10m: $(VENV)/.dev
	$(PY) bench/bench_10m.py

## bench-quick: the short benchmarks (training, scoring 100,000 partitioned, the API) against this checkout and
## BASE (a git ref, default HEAD) in turns, with their ratios: `make bench-quick BASE=main~3`
BASE ?= HEAD
bench-quick: $(VENV)/.dev
	$(PY) bench/quick.py --base $(BASE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache node_modules
