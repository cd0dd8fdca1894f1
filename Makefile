# FaceGate developer entry points. `make test` and `make run` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Model weights come from a mirror directory, never from git.
export FACEGATE_MODEL_MIRROR ?= $(abspath ../shared/models)
export FACEGATE_MODELS_DIR ?= $(abspath models)
# Debian packages the tests need: a real MQTT broker, openssl to make its test certificates,
# shellcheck for the board scripts.
# fonts: names in any script on annotated images (Latin, Greek, Cyrillic; Chinese, Japanese, Korean)
# chromium and its driver: the web page's tests and `make screenshots` run in a real browser
# qemu-user-static: the embedder's 8-bit copy checked on an emulated CPU without VNNI (tests/test_int8.py)
DEBIAN_PACKAGES := mosquitto openssl shellcheck systemd fonts-dejavu-core fonts-wqy-microhei chromium chromium-driver qemu-user-static
LFW ?= ../shared/data/lfw-dev
SEED ?= ../shared/data/seed-samples
DEMO := demo
PORTRAITS := obama.jpg ldh.jpg lm.jpg zhangxueyou.jpg 5.jpg
# two visitors nobody enrolled, from LFW when it is there
STRANGERS := Aaron_Sorkin/Aaron_Sorkin_0001.jpg Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg

# The NPU side (issue: board bring-up). Rockchip's toolkit lives in its own environment because
# it pins numpy below 2; torch 2.13.0 comes from a local CPU build, the toolkit with --no-deps.
RKNN_VENV := .rknn-venv
RKNN_PY := $(RKNN_VENV)/bin/python
BOARD ?= rv1126
# the toolkit's simulator target for `make test-board` and `make rknn-check` (RV1126 needs toolkit v1)
RKNN_TARGET ?= rv1126b

.PHONY: all venv models system-deps test test-slow test-board test-emulated rknn-env rknn-models rknn-check bundle deploy \
	bench run demo eval-lfw eval-identification clean screenshots

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch (the CPU build, pinned: a looser pin pulls a CUDA build) exports the CASIA
	# MobileFaceNet checkpoint to ONNX at `make models` (facegate_host/prepare.py); the appliance never imports it
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

models: venv
	$(VENV)/bin/facegate models install
	$(VENV)/bin/facegate quantise-embedder

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

$(RKNN_VENV)/.installed: pyproject.toml tools/rknn-constraints.txt
	$(PYTHON) -m venv $(RKNN_VENV)
	$(RKNN_PY) -m pip install --quiet --upgrade pip
	$(RKNN_PY) -m pip install --quiet torch==2.13.0
	$(RKNN_PY) -m pip install --quiet --no-deps rknn-toolkit2==2.5.0
	$(RKNN_PY) -m pip install --quiet -c tools/rknn-constraints.txt numpy protobuf onnx onnxruntime \
	  opencv-python-headless psutil ruamel.yaml scipy tqdm fast-histogram setuptools
	$(RKNN_PY) -m pip install --quiet -c tools/rknn-constraints.txt -e '.[test]'
	touch $@

rknn-env: $(RKNN_VENV)/.installed

# the simulator tests: conversion, the quantised pipeline against ONNX Runtime, the bundle
test-board: rknn-env models system-deps
	$(RKNN_PY) -m pytest -q -m board -o faulthandler_timeout=900

# .rknn files for BOARD's target and dtypes (board/$(BOARD)/meta), into models/rknn/
rknn-models: rknn-env models
	. board/$(BOARD)/meta && tools/convert-rknn --target $$NPU_TARGET --detector-size $$DETECTOR_SIZE \
	  --detector-dtypes $$DETECTOR_DTYPE --embedder-dtypes $$EMBEDDER_DTYPE

# the quantisation table: both models, three dtypes, LFW-dev, on the simulator (about 25 minutes)
rknn-check: rknn-env models
	tools/convert-rknn --target $(RKNN_TARGET) --detector-dtypes i8,i16,fp16 --embedder-dtypes i8,i16,fp16 \
	  --pipeline fp16:fp16,fp16:i16,fp16:i8,i8:i8 \
	  --check --json rknn-check-$(RKNN_TARGET).json

# one tarball for a board: overlay, wheelhouse, .rknn models, manifest (run rknn-models first);
# the RV1126's needs SYSROOT=its root filesystem, to cross-build board/rv1126/source-wheels.txt
bundle: venv
	$(PY) tools/make-bundle --board $(BOARD) --models $(FACEGATE_MODELS_DIR) \
	  $(if $(wildcard $(SEED)/probes/obama.jpg),--reference-photo $(SEED)/probes/obama.jpg) \
	  $(if $(SYSROOT),--sysroot $(SYSROOT))

# copy the newest bundle to a board and install it there: make deploy HOST=root@door-front
deploy:
	@test -n "$(HOST)" || { echo "usage: make deploy HOST=root@BOARD-ADDRESS [BOARD=$(BOARD)]"; exit 2; }
	@bundle=$$(ls -t dist/facegate-$(BOARD)-*.tar.gz 2>/dev/null | head -n 1); \
	test -n "$$bundle" || { echo "no bundle for $(BOARD) in dist/: run 'make bundle BOARD=$(BOARD)'"; exit 2; }; \
	name=$$(basename $$bundle .tar.gz); \
	scp "$$bundle" "$(HOST):/tmp/" && \
	ssh "$(HOST)" "cd /tmp && tar -xzf $$name.tar.gz && ./$$name/install.sh && rm -rf $$name $$name.tar.gz"

# The RV1126B's bundle in an emulated Debian arm64 root (debootstrap + qemu-user-static, cached in
# .emulated/): install, self-test, and the door on the demo video against the host's decisions;
# then the RV1126's RKNPU1 runner in an emulated armhf root
EMULATION_PACKAGES := debootstrap qemu-user-static binfmt-support gcc-arm-linux-gnueabihf
test-emulated: run rknn-env
	@missing=""; for p in $(EMULATION_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	@[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	@[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
	@[ -e /proc/sys/fs/binfmt_misc/qemu-arm ] || update-binfmts --enable qemu-arm
	$(VENV)/bin/facegate audit --audit $(DEMO)/audit.db --json > $(DEMO)/decisions.jsonl
	$(MAKE) rknn-models BOARD=rv1126b
	$(PY) tools/make-bundle --board rv1126b --models $(FACEGATE_MODELS_DIR) --out $(DEMO)/bundle-rv1126b.tar.gz \
	  --reference-photo $(SEED)/probes/obama.jpg
	$(PY) -m facegate_host.emulated --bundle $(DEMO)/bundle-rv1126b.tar.gz --demo $(DEMO) --seed $(SEED) \
	  --expect $(DEMO)/decisions.jsonl
	$(PY) -m facegate_host.emulated_rv1126

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

# `make run`: the appliance on the demo video, driving an emulated relay on a pseudo-terminal, with
# its web page; at a terminal the page stays up after the video until Ctrl-C.
run: demo
	@rm -f $(DEMO)/relay $(DEMO)/audit.db $(DEMO)/audit.db-wal $(DEMO)/audit.db-shm
	@$(VENV)/bin/facegate web setup-code --config tools/demo.toml 2>/dev/null | \
	  sed 's|^|the web page has no user yet: make one at https://localhost:8443/setup with the code |' || true
	@$(PY) tools/relay-emulator --link $(DEMO)/relay & emulator=$$!; \
	for i in $$(seq 50); do [ -e $(DEMO)/relay ] && break; sleep 0.1; done; \
	$(VENV)/bin/facegate run --config tools/demo.toml --camera $(DEMO)/visitors.mp4 \
	  --relay-port $(DEMO)/relay --gallery $(DEMO)/gallery.db --audit $(DEMO)/audit.db; status=$$?; \
	kill $$emulator; wait $$emulator; \
	[ $$status -eq 0 ] && $(VENV)/bin/facegate audit --audit $(DEMO)/audit.db; \
	if [ $$status -eq 0 ] && [ -t 0 ] && [ -z "$$CI" ]; then \
	  echo "the demo video has ended; its attempts stay on the page at https://localhost:8443/ until Ctrl-C"; \
	  $(VENV)/bin/facegate web serve --config tools/demo.toml --gallery $(DEMO)/gallery.db --audit $(DEMO)/audit.db \
	    || [ $$? -eq 130 ]; \
	fi; exit $$status

# every page of the web page at phone and desktop sizes, from the browser tests, into screenshots/
screenshots: venv models system-deps
	FACEGATE_SCREENSHOTS=$(abspath screenshots) $(PY) -m pytest -q tests/test_web.py

eval-identification: venv models
	$(VENV)/bin/facegate eval-identification --images $(LFW)/images --cache .eval-cache --json eval-identification.json

eval-lfw: venv models
	$(VENV)/bin/facegate eval-lfw --pairs $(LFW)/pairs.txt --images $(LFW)/images --json eval-lfw.json

clean:
	rm -rf $(VENV) $(RKNN_VENV) models .pytest_cache bench/results.json $(DEMO) dist
