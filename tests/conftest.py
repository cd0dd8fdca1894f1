"""Shared fixtures: paths to the real models and data in ../shared, installed by `make models`."""

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED = SHARED / "data" / "seed-samples"
LFW = SHARED / "data" / "lfw-dev"
MODELS = Path(os.environ.get("FACEGATE_MODELS_DIR") or ROOT / "models")


def wait_until(predicate, timeout=3.0):
    """Poll until predicate() is true or the timeout passes; True if it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_cli(*args, cwd=None, env=None):
    """Run `python -m appliance ARGS` as a user would, returning the completed process."""
    import subprocess

    full_env = dict(os.environ, FACEGATE_MODELS_DIR=str(MODELS))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *map(str, args)], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def models_dir():
    if not (MODELS / "mobilefacenet_128d.onnx").is_file():
        pytest.fail("models are not installed in %s: run 'make models'" % MODELS)
    return MODELS


@pytest.fixture(scope="session")
def pipeline(models_dir):
    from appliance.config import from_dict
    from appliance.vision.pipeline import FacePipeline

    config = from_dict({"models": {"dir": str(models_dir)}})
    built = FacePipeline.from_config(config)
    yield built
    built.close()
