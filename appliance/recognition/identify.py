"""Name every face in a photo or a stream's frames: the seed's job, `facegate identify`.

A stream's frames are mostly the frame before again: people stand, the camera holds still. A
frame whose thumbnail is the same as that of the last frame the pipeline ran on, to within the
noise of video compression, keeps that frame's faces and embeddings; only the gallery search
and the decision run again, so an enrolment made meanwhile still applies at once.
"""

from dataclasses import replace
from typing import List, Optional, Tuple

import cv2
import numpy as np

from appliance.config import Config
from appliance.inference import NPU_BACKENDS
from appliance.recognition.decision import Decision, decide, threshold_for
from appliance.vision.pipeline import FacePipeline, FaceResult

# On a 160x90 grey thumbnail, one pixel averages about 8x8 pixels of a 1280x720 frame. Between
# held frames of H.264 video no thumbnail pixel moved by more than 3 grey levels here; a person
# moving, arriving or leaving moves hundreds of them by 100 or more.
_THUMBNAIL = (160, 90)
_STILL_LEVELS = 8


def identify_config(config: Config) -> Config:
    """The config `identify` detects with: the frame's aspect at `detector.identify_input_size`,
    where the backend takes any input size (an NPU's model has the one size it was converted for)
    and that is not 0 (the door's detector)."""
    if config.models.backend in NPU_BACKENDS or not config.detector.identify_input_size:
        return config
    # No second look: at this scale the first look's landmarks are as good. On the seed's probes
    # at three sizes (73 faces) a second look changed 12 faces' distances to the right person
    # and their mean by +0.002 (worse), and it cost a third of the frame's time.
    detector = replace(config.detector, input_size=config.detector.identify_input_size, keep_frame_aspect=True,
                       refine_below_pixels=0)
    return replace(config, detector=detector)


def name_faces(results: List[FaceResult], index, config: Config, model_id: str) -> List[Tuple[FaceResult, Decision]]:
    """Each face decided against the gallery; faces failing quality are decided as unknown."""
    threshold = threshold_for(config, model_id, index.template_counts()).value
    return [(result, decide(index.search(result.embedding), threshold, config.matching)) for result in results]


def identify_frame(pipeline: FacePipeline, index, config: Config, frame: np.ndarray):
    """[(FaceResult, Decision)] for every face of one photo."""
    return name_faces(pipeline.analyse(frame), index, config, pipeline.embedder.model_id)


class StreamIdentifier:
    """identify_frame for consecutive frames of a stream, skipping the networks on still frames."""

    def __init__(self, pipeline: FacePipeline, index, config: Config, reuse_still_frames: bool = True) -> None:
        self.pipeline = pipeline
        self.index = index
        self.config = config
        self.reuse_still_frames = reuse_still_frames
        self.analysed = 0  # frames the networks ran on
        self.reused = 0  # still frames that kept the last analysed frame's faces
        self._thumbnail: Optional[np.ndarray] = None
        self._results: List[FaceResult] = []

    def frame(self, image: np.ndarray) -> List[Tuple[FaceResult, Decision]]:
        thumbnail = cv2.cvtColor(cv2.resize(image, _THUMBNAIL, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        if self.reuse_still_frames and self._still(thumbnail):
            self.reused += 1
        else:
            # compared with the last analysed frame, not the previous one, so a slow drift adds up
            self._thumbnail = thumbnail
            self._results = self.pipeline.analyse(image)
            self.analysed += 1
        return name_faces(self._results, self.index, self.config, self.pipeline.embedder.model_id)

    def _still(self, thumbnail: np.ndarray) -> bool:
        if self._thumbnail is None or self._thumbnail.shape != thumbnail.shape:
            return False
        return int(cv2.absdiff(thumbnail, self._thumbnail).max()) <= _STILL_LEVELS
