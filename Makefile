# FaceGate developer entry points. `make test` and `make run` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Model weights come from a mirror directory, never from git.
export FACEGATE_MODEL_MIRROR ?= $(abspath ../shared/models)
export FACEGATE_MODELS_DIR ?= $(abspath models)
# Debian packages the tests need (mosquitto arrives with the MQTT work).
DEBIAN_PACKAGES :=
LFW ?= ../shared/data/lfw-dev
SEED ?= ../shared/data/seed-samples
DEMO := demo
PORTRAITS := obama.jpg ldh.jpg lm.jpg zhangxueyou.jpg 5.jpg

.PHONY: all venv models system-deps test test-slow bench run demo eval-lfw eval-identification clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

models: venv
	$(VENV)/bin/facegate models install

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: venv models system-deps
	$(PY) -m pytest -q

test-slow: venv models system-deps
	$(PY) -m pytest -q -m slow

bench: venv models
	$(PY) -m bench.run --out bench/results.json

# The demo: enrol the seed gallery, make a video of visitors from the probe photos, identify them.
demo: venv models
	@test -d $(SEED)/gallery || { echo "the seed samples are missing: expected $(SEED)/gallery (set SEED=...)"; exit 2; }
	mkdir -p $(DEMO)
	rm -f $(DEMO)/gallery.db $(DEMO)/gallery.db-wal $(DEMO)/gallery.db-shm
	$(VENV)/bin/facegate enroll --from-dir $(SEED)/gallery --gallery $(DEMO)/gallery.db
	$(PY) tools/make-demo-video $(DEMO)/visitors.mp4 $(addprefix $(SEED)/probes/,$(PORTRAITS))

run: demo
	$(VENV)/bin/facegate identify --video $(DEMO)/visitors.mp4 --gallery $(DEMO)/gallery.db

eval-identification: venv models
	$(VENV)/bin/facegate eval-identification --images $(LFW)/images --json eval-identification.json

eval-lfw: venv models
	$(VENV)/bin/facegate eval-lfw --pairs $(LFW)/pairs.txt --images $(LFW)/images --json eval-lfw.json

clean:
	rm -rf $(VENV) models .pytest_cache bench/results.json $(DEMO)
