"""`facegate eval-liveness`: the liveness threshold chosen on some subjects of nuaa-dev and its
error rates on the others, per attempt, in ISO/IEC 30107-3 terms.

nuaa-dev holds live frames and printed-photo attack frames of 8 people, in one folder per
class and subject (`live/0001/`, `attack/0001/`), each subject's frames in capture order by
name. An attempt is what the door fuses liveness over before a grant: `frames` consecutive
frames of one subject and class (the door's `liveness.frames`: a grant waits for that many
scored frames and averages them). Frames are never split from their subject: every split is by
person.

Protocol: for every way of choosing half the subjects (70 splits of 8), the threshold is
chosen on the chosen half by the rule below and measured on the other half:
- APCER (attack presentation classification error rate): attack attempts accepted as live,
  per attack type (here one: printed photo), the worst over types being the one to quote;
- BPCER (bona fide presentation classification error rate): live attempts refused.
The rule, security first: the lowest threshold that accepts none of the chosen half's attack
attempts (just above the best-scoring one), so that live people lose as little as that allows.
The shipped threshold is the same rule on all subjects; the held-out figures estimate how it
does on people it was not chosen on.
"""

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

ATTACK_TYPES = {"attack": "printed photo"}  # nuaa-dev's only attack: photos printed on paper


@dataclass
class Scores:
    """Per-frame live probabilities by (class, subject), frames in capture order."""
    frames: Dict[Tuple[str, str], np.ndarray]

    def subjects(self) -> List[str]:
        return sorted({subject for _, subject in self.frames})


def capture_order(path: Path) -> Tuple:
    """nuaa-dev's names are numbers joined by '_' (0002_01_00_01_96.jpg), not zero-padded:
    compared as numbers, they are in capture order."""
    return tuple(int(part) if part.isdigit() else part for part in path.stem.split("_"))


def score_folder(pipeline, root: Path, cache: Path = None) -> Scores:
    """Detect each frame's largest face and score it (frames without a face are left out: the
    door does not decide without one)."""
    files = sorted(root.glob("*/*/*.jpg"), key=lambda p: (p.parent.parent.name, p.parent.name, capture_order(p)))
    key = hashlib.sha256(("\n".join(str(p.relative_to(root)) for p in files) + pipeline.config.models.detector)
                         .encode()).hexdigest()[:12]
    cached = cache / ("liveness-%s.json" % key) if cache else None
    if cached is not None and cached.is_file():
        raw = json.loads(cached.read_text())
    else:
        raw = {}
        for path in files:
            image = cv2.imread(str(path))
            faces = pipeline.detect(image) if image is not None else []
            if not faces:
                continue
            face = max(faces, key=lambda f: f.width)
            kind, subject = path.parent.parent.name, path.parent.name
            raw.setdefault("%s/%s" % (kind, subject), []).append(pipeline.liveness.score(image, face.box))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(raw))
    return Scores({tuple(name.split("/")): np.asarray(values) for name, values in raw.items()})


def attempts(values: np.ndarray, frames: int) -> np.ndarray:
    """Fused scores of consecutive, non-overlapping runs of `frames` frames (the mean, as the door fuses)."""
    usable = (len(values) // frames) * frames
    return values[:usable].reshape(-1, frames).mean(axis=1)


def attempt_scores(scores: Scores, subjects: Sequence[str], frames: int) -> Dict[str, np.ndarray]:
    """'live' and each attack type -> fused attempt scores of these subjects."""
    out: Dict[str, List[np.ndarray]] = {}
    for (kind, subject), values in scores.frames.items():
        if subject in subjects:
            out.setdefault(kind, []).append(attempts(values, frames))
    return {kind: np.concatenate(parts) if parts else np.zeros(0) for kind, parts in out.items()}


def choose_threshold(attacks: np.ndarray) -> float:
    """Just above the best-scoring of these attack attempts, to the next thousandth."""
    if not len(attacks):
        raise ValueError("no attack attempts to choose a threshold on")
    return math.floor(float(np.max(attacks)) * 1000 + 1) / 1000


def rates(split: Dict[str, np.ndarray], threshold: float) -> Dict[str, Tuple[int, int]]:
    """(errors, attempts) per class: attacks accepted (score >= threshold), live refused."""
    found = {}
    for kind, values in split.items():
        errors = int(np.sum(values >= threshold)) if kind != "live" else int(np.sum(values < threshold))
        found[kind] = (errors, int(values.size))
    return found


def upper_95(errors: int, total: int) -> float:
    """One-sided 95% upper bound of a rate seen as errors/total (Clopper-Pearson; 3/n at zero)."""
    if total == 0:
        return 1.0
    if errors == 0:
        return 1 - 0.05 ** (1 / total)
    from math import comb

    low, high = errors / total, 1.0
    for _ in range(60):  # the rate at which seeing <= errors has probability 5%
        middle = (low + high) / 2
        tail = sum(comb(total, k) * middle ** k * (1 - middle) ** (total - k) for k in range(errors + 1))
        low, high = (middle, high) if tail > 0.05 else (low, middle)
    return high


def evaluate(scores: Scores, frames: int) -> dict:
    subjects = scores.subjects()
    half = len(subjects) // 2
    totals = {kind: [0, 0] for kind in ["live"] + list(ATTACK_TYPES)}
    thresholds, worst = [], {kind: 0.0 for kind in totals}
    for chosen in itertools.combinations(subjects, half):
        held_out = [s for s in subjects if s not in chosen]
        chosen_attempts = attempt_scores(scores, chosen, frames)
        threshold = choose_threshold(np.concatenate([chosen_attempts[kind] for kind in ATTACK_TYPES]))
        thresholds.append(threshold)
        for kind, (errors, total) in rates(attempt_scores(scores, held_out, frames), threshold).items():
            totals[kind][0] += errors
            totals[kind][1] += total
            worst[kind] = max(worst[kind], errors / total if total else 0.0)
    every = attempt_scores(scores, subjects, frames)
    shipped = choose_threshold(np.concatenate([every[kind] for kind in ATTACK_TYPES]))
    splits = len(thresholds)
    result = {"subjects": len(subjects), "frames_per_attempt": frames,
              "rule": "lowest threshold accepting none of the choosing half's attack attempts",
              "splits": splits, "thresholds_chosen": {"min": min(thresholds), "median": float(np.median(thresholds)),
                                                       "max": max(thresholds)},
              "shipped_threshold": round(shipped, 3),
              "attempts_all_subjects": {kind: int(values.size) for kind, values in every.items()},
              "held_out": {}}
    for kind, (errors, total) in totals.items():
        name = "BPCER" if kind == "live" else "APCER (%s)" % ATTACK_TYPES[kind]
        # each held-out attempt is counted once per split it is held out in (35 of 70): the rate is
        # the mean over splits, the bound is taken on one split's worth of attempts
        per_split = total / splits
        result["held_out"][name] = {"rate": errors / total if total else None, "worst_split": worst[kind],
                                    "attempts_per_split": per_split,
                                    "upper_95_one_split": upper_95(round(errors / splits), round(per_split))}
    return result


def table(result: dict) -> List[str]:
    lines = ["liveness on nuaa-dev, %d subjects, %d frames fused per attempt, %d splits by subject"
             % (result["subjects"], result["frames_per_attempt"], result["splits"]),
             "threshold rule: the %s; chosen %.3f-%.3f (median %.3f); "
             "the same rule on all subjects: %.3f" % (result["rule"], result["thresholds_chosen"]["min"],
                                              result["thresholds_chosen"]["max"], result["thresholds_chosen"]["median"],
                                              result["shipped_threshold"])]
    for name, row in result["held_out"].items():
        lines.append("%-24s held out: %.2f%% (worst split %.2f%%; 95%% upper bound %.2f%%) of %.0f attempts per split"
                     % (name, 100 * row["rate"], 100 * row["worst_split"], 100 * row["upper_95_one_split"],
                        row["attempts_per_split"]))
    return lines
