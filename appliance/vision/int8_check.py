"""Whether the embedder's 8-bit copy, on the CPU that runs it, still embeds as the calibration assumes.

Integer kernels differ between CPUs: an x86 CPU without VNNI adds pairs of 8-bit products in
16 bits and can saturate where a VNNI CPU or an ARM one does not. So the copy is measured where
it runs, against the float model's embeddings of a fixed set of aligned faces made with it
(`make models`, and carried in a board's bundle), and refused outside the tolerance written
beside the calibration. The verdict is kept with the CPU it was made on, so a door measures
once per CPU kind, not at every start.
"""

import json
import logging
import platform
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from appliance.errors import ModelError
from appliance.inference.base import Runner
from appliance.models import int8_check_set, int8_stamp_text, int8_tolerance, int8_verdict
from appliance.vision.embedder import model_input, normalise

log = logging.getLogger(__name__)

# the CPU features that choose ONNX Runtime's integer kernels, as numpy names them
_KERNEL_FEATURES = ("AVX2", "AVX512F", "AVX512BW", "AVX512VNNI", "AVXVNNI", "AVX512_SPR", "ASIMDDP", "I8MM", "SVE")


def cpu_kind() -> str:
    """The machine and the integer-kernel features its CPU reports: two CPUs of one kind run the
    copy through the same kernels. Asked of the CPU itself (numpy's own CPUID probe), as ONNX
    Runtime asks it: /proc/cpuinfo describes the host even under an emulator or a masked VM."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            features = {}
    found = [name.lower() for name in _KERNEL_FEATURES if features.get(name)]
    return " ".join([platform.machine()] + found)


def embeddings(runner: Runner, crops: np.ndarray) -> np.ndarray:
    """One unit vector per aligned crop, each run alone (as the door embeds one face)."""
    vectors = [runner.run(model_input(crop, runner.spec)[None])[0].reshape(-1) for crop in crops]
    return normalise(np.stack(vectors).astype(np.float32))


def figures(copy: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """Cosine of each face's copy embedding with its float one (mean, 1st percentile, worst), and
    how far the distances between the faces moved (median and 99th percentile of |change|)."""
    cosine = np.sum(copy * reference, axis=1)
    upper = np.triu_indices(len(copy), 1)
    moved = np.abs((1 - copy @ copy.T)[upper] - (1 - reference @ reference.T)[upper])
    return {"faces": int(len(copy)), "cosine_mean": float(cosine.mean()),
            "cosine_p1": float(np.percentile(cosine, 1)), "cosine_worst": float(cosine.min()),
            "distance_shift_median": float(np.median(moved)), "distance_shift_p99": float(np.percentile(moved, 99))}


def outside(measured: Dict[str, float], tolerance: Dict[str, float]) -> Optional[str]:
    """Which figure breaks the tolerance (`cosine_*` are minimums, `distance_shift_*` maximums), or None."""
    for name, limit in sorted(tolerance.items()):
        value = measured.get(name)
        if value is None:
            return "%s was not measured" % name
        if name.startswith("cosine") and value < limit:
            return "%s %.4f below %.4f" % (name.replace("_", " "), value, limit)
        if name.startswith("distance") and value > limit:
            return "%s %.4f above %.4f" % (name.replace("_", " "), value, limit)
    return None


def describe(measured: Dict[str, float]) -> str:
    return ("cosine with float mean %.4f, p1 %.4f, worst %.4f; distances moved median %.4f, p99 %.4f (%d faces)"
            % (measured["cosine_mean"], measured["cosine_p1"], measured["cosine_worst"],
               measured["distance_shift_median"], measured["distance_shift_p99"], measured["faces"]))


def measure(runner: Runner, source: Path) -> dict:
    """The copy in `runner` against the check set beside `source`, its float file, on this CPU:
    {"cpu", "stamp", "figures", "tolerance", "refused": reason or None}."""
    path = int8_check_set(source)
    try:
        with np.load(path) as saved:
            crops, reference = saved["crops"], saved["reference"]
    except (OSError, KeyError, ValueError) as err:
        raise ModelError("the embedder's 8-bit check set %s is missing or unreadable (%s): run 'make models' "
                         "(facegate quantise-embedder), or set models.embedder_int8 = false" % (path, err)) from err
    tolerance = int8_tolerance(runner.spec.model_id)
    measured = figures(embeddings(runner, crops), reference)
    return {"cpu": cpu_kind(), "stamp": int8_stamp_text(source), "figures": measured, "tolerance": tolerance,
            "refused": outside(measured, tolerance)}


def verdict(runner: Runner, source: Path, remeasure: bool = False) -> dict:
    """The kept verdict where it was made on this kind of CPU for this copy, else a new one (kept
    where the folder is writable; a read-only models folder measures at each start)."""
    kept = int8_verdict(source)
    if not remeasure:
        try:
            known = json.loads(kept.read_text())
            if known.get("cpu") == cpu_kind() and known.get("stamp") == int8_stamp_text(source):
                return known
        except (OSError, ValueError):
            pass
    result = measure(runner, source)
    try:
        partial = kept.with_name(kept.name + ".partial")
        partial.write_text(json.dumps(result, indent=1) + "\n")
        partial.replace(kept)
    except OSError as err:
        log.info("the 8-bit embedder's verdict is not kept (%s): it is measured again at the next start", err)
    return result
