"""Quality gates: is this face good enough to decide on? Each failure carries its reason."""

import math
from dataclasses import dataclass, field
from typing import List

import cv2
import numpy as np

from appliance.config import QualityConfig
from appliance.vision.align import ARCFACE_TEMPLATE

# Where the nose sits between the eye line and the mouth line on a frontal face.
_EYES_Y = (ARCFACE_TEMPLATE[0, 1] + ARCFACE_TEMPLATE[1, 1]) / 2
_MOUTH_Y = (ARCFACE_TEMPLATE[3, 1] + ARCFACE_TEMPLATE[4, 1]) / 2
FRONTAL_NOSE_RATIO = float((ARCFACE_TEMPLATE[2, 1] - _EYES_Y) / (_MOUTH_Y - _EYES_Y))


@dataclass
class Quality:
    interocular: float
    yaw: float
    pitch: float
    roll_degrees: float
    sharpness: float
    brightness: float
    reasons: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict:
        return {"interocular": round(self.interocular, 1), "yaw": round(self.yaw, 3),
                "pitch": round(self.pitch, 3), "roll_degrees": round(self.roll_degrees, 1),
                "sharpness": round(self.sharpness, 1), "brightness": round(self.brightness, 1),
                "passed": self.passed, "reasons": list(self.reasons)}


def pose_from_landmarks(landmarks: np.ndarray):
    """(interocular, yaw, pitch, roll in degrees) from five landmarks in frame pixels.

    Measured in the face's own frame (rotated by the eye line) so a tilted head does not read
    as a turned one. yaw: sideways offset of the nose from the eye/mouth midline, in eye
    distances. pitch: relative change of the nose's height between eye line and mouth line.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    eye_vector = right_eye - left_eye
    interocular = float(np.hypot(*eye_vector))
    if interocular < 1e-6:
        return 0.0, math.inf, math.inf, 0.0
    roll = math.degrees(math.atan2(eye_vector[1], eye_vector[0]))
    axis_x = eye_vector / interocular
    axis_y = np.array([-axis_x[1], axis_x[0]])
    eyes_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_left + mouth_right) / 2
    midline_x = (np.dot(eyes_mid, axis_x) + np.dot(mouth_mid, axis_x)) / 2
    yaw = float((np.dot(nose, axis_x) - midline_x) / interocular)
    eye_to_mouth = np.dot(mouth_mid - eyes_mid, axis_y)
    if abs(eye_to_mouth) < 1e-6:
        return interocular, yaw, math.inf, roll
    nose_ratio = np.dot(nose - eyes_mid, axis_y) / eye_to_mouth
    pitch = float((nose_ratio - FRONTAL_NOSE_RATIO) / FRONTAL_NOSE_RATIO)
    return interocular, yaw, pitch, roll


def sharpness(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian on the aligned face: low means blurred or out of focus."""
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def assess(landmarks: np.ndarray, aligned_bgr: np.ndarray, limits: QualityConfig) -> Quality:
    interocular, yaw, pitch, roll = pose_from_landmarks(landmarks)
    grey_mean = float(cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY).mean())
    quality = Quality(interocular, yaw, pitch, roll, sharpness(aligned_bgr), grey_mean)
    reasons = quality.reasons
    if interocular < limits.min_interocular:
        reasons.append("too small: eyes %s px apart, need %s" % _apart(interocular, limits.min_interocular, 0))
    if abs(yaw) > limits.max_yaw:
        reasons.append("turned sideways: yaw %s, limit %s" % _apart(yaw, limits.max_yaw, 2))
    if abs(pitch) > limits.max_pitch:
        reasons.append("tilted up or down: pitch %s, limit %s" % _apart(pitch, limits.max_pitch, 2))
    if abs(roll) > limits.max_roll_degrees:
        reasons.append("head tilted: roll %s degrees, limit %s" % _apart(roll, limits.max_roll_degrees, 0))
    if quality.sharpness < limits.min_sharpness:
        reasons.append("blurred: sharpness %s, need %s" % _apart(quality.sharpness, limits.min_sharpness, 0))
    if grey_mean < limits.min_brightness:
        reasons.append("too dark: brightness %s, need %s" % _apart(grey_mean, limits.min_brightness, 0))
    if grey_mean > limits.max_brightness:
        reasons.append("overexposed: brightness %s, limit %s" % _apart(grey_mean, limits.max_brightness, 0))
    return quality


def _apart(value: float, limit: float, digits: int):
    """Value and limit with as many decimals as it takes for them to print differently: a refusal
    that reads "eyes 40 px apart, need 40" makes no sense to anyone."""
    for places in range(digits, digits + 4):
        shown = ("%.*f" % (places, value), "%.*f" % (places, limit))
        if shown[0] != shown[1]:
            return shown
    return shown
