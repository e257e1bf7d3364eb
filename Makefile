# The front door: `make run` and `make test` are all a fresh clone needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
XIAOBAO := $(VENV)/bin/xiaobao
STAMP := $(VENV)/.installed
CORPUS := data/demo/demo_corpus.csv
REGISTRY := models/registry

.PHONY: install corpus train model run test lint bench clean

install: $(STAMP)

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

# The default model, trained only if the registry has no champion yet.
model: $(STAMP) $(CORPUS)
	@test -n "$$($(PY) -c 'from models.registry import Registry; print(Registry().current() or "")')" \
		|| $(MAKE) train

run: model
	@echo "The service arrives with issue 3; until then, a real prediction with the current model:"
	$(XIAOBAO) predict --model current \
		--text "客户来电反映其信用卡近三个月每天接到催收电话，对方还打给他单位领导，客户情绪激动，称再这样就去银保监投诉。" \
		--text "请问你们的定期存款提前支取利息怎么算？" \
		--text "I was charged a late fee although I paid on time, and nobody answers my emails." \
		--channel 电话客服

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) $(CORPUS) lint
	$(VENV)/bin/pytest -q

bench: $(STAMP) $(CORPUS)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) var $(REGISTRY) $(CORPUS) .pytest_cache .ruff_cache
