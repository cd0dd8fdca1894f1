# FaceGate developer entry points. `make test` and `make run` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Model weights come from a mirror directory, never from git.
export FACEGATE_MODEL_MIRROR ?= $(abspath ../shared/models)
export FACEGATE_MODELS_DIR ?= $(abspath models)
# Debian packages the tests need: a real MQTT broker, and openssl to make its test certificates.
DEBIAN_PACKAGES := mosquitto openssl
LFW ?= ../shared/data/lfw-dev
SEED ?= ../shared/data/seed-samples
DEMO := demo
PORTRAITS := obama.jpg ldh.jpg lm.jpg zhangxueyou.jpg 5.jpg
# two visitors nobody enrolled, from LFW when it is there
STRANGERS := Aaron_Sorkin/Aaron_Sorkin_0001.jpg Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg

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
	$(PY) tools/make-demo-video $(DEMO)/visitors.mp4 $(addprefix $(SEED)/probes/,$(PORTRAITS)) \
	  $(wildcard $(addprefix $(LFW)/images/,$(STRANGERS)))

# `make run`: the appliance on the demo video, driving an emulated relay on a pseudo-terminal.
run: demo
	@rm -f $(DEMO)/relay $(DEMO)/audit.db $(DEMO)/audit.db-wal $(DEMO)/audit.db-shm
	@$(PY) tools/relay-emulator --link $(DEMO)/relay & emulator=$$!; \
	for i in $$(seq 50); do [ -e $(DEMO)/relay ] && break; sleep 0.1; done; \
	$(VENV)/bin/facegate run --config tools/demo.toml --camera $(DEMO)/visitors.mp4 \
	  --relay-port $(DEMO)/relay --gallery $(DEMO)/gallery.db --audit $(DEMO)/audit.db; status=$$?; \
	kill $$emulator; wait $$emulator; \
	[ $$status -eq 0 ] && $(VENV)/bin/facegate audit --audit $(DEMO)/audit.db; exit $$status

eval-identification: venv models
	$(VENV)/bin/facegate eval-identification --images $(LFW)/images --json eval-identification.json

eval-lfw: venv models
	$(VENV)/bin/facegate eval-lfw --pairs $(LFW)/pairs.txt --images $(LFW)/images --json eval-lfw.json

clean:
	rm -rf $(VENV) models .pytest_cache bench/results.json $(DEMO)
