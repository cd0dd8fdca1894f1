"""`facegate detect` and `facegate compare`: the vision pipeline on still images."""

import json

import cv2

from appliance.cli.common import add_config_options, load_config
from appliance.errors import FaceGateError
from appliance.recognition.decision import threshold_for
from appliance.vision.pipeline import FacePipeline, read_image


def register(commands) -> None:
    detect = commands.add_parser("detect", help="find faces in an image, with landmarks and quality")
    detect.add_argument("image")
    detect.add_argument("--out", help="write an annotated copy of the image here")
    detect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_options(detect)
    detect.set_defaults(handler=run_detect)

    compare = commands.add_parser("compare", help="distance between the main faces of two images")
    compare.add_argument("first")
    compare.add_argument("second")
    add_config_options(compare)
    compare.set_defaults(handler=run_compare)


def annotate(image, results) -> None:
    for result in results:
        x1, y1, x2, y2 = (int(round(v)) for v in result.face.box)
        colour = (0, 200, 0) if result.quality.passed else (0, 160, 255)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        for x, y in result.face.landmarks:
            cv2.circle(image, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1)
        cv2.putText(image, "%.2f" % result.face.score, (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def write_image(path: str, image) -> None:
    try:
        ok = cv2.imwrite(path, image)
    except cv2.error as err:
        raise FaceGateError("cannot write %s: %s" % (path, err)) from err
    if not ok:
        raise FaceGateError("cannot write %s (unknown extension or unwritable folder)" % path)


def run_detect(args) -> int:
    config = load_config(args)
    image = read_image(args.image)
    pipeline = FacePipeline.from_config(config)
    try:
        results = pipeline.analyse(image, embed=False)
    finally:
        pipeline.close()
    if args.json:
        print(json.dumps([{"box": [round(float(v), 1) for v in r.face.box],
                           "landmarks": [[round(float(v), 1) for v in p] for p in r.face.landmarks],
                           "score": round(r.face.score, 4), "quality": r.quality.as_dict()}
                          for r in results], indent=2))
    else:
        print("%s: %d face%s" % (args.image, len(results), "" if len(results) == 1 else "s"))
        for index, r in enumerate(results, 1):
            x1, y1, x2, y2 = r.face.box
            verdict = "ok" if r.quality.passed else "; ".join(r.quality.reasons)
            print("  %d. box (%d, %d)-(%d, %d) score %.3f eyes %.0f px yaw %+.2f sharpness %.0f: %s"
                  % (index, x1, y1, x2, y2, r.face.score, r.quality.interocular, r.quality.yaw,
                     r.quality.sharpness, verdict))
    if args.out:
        annotate(image, results)
        write_image(args.out, image)
    return 0


def main_face(pipeline: FacePipeline, path: str):
    """The largest face in an image, analysed; an image without a face is an error."""
    image = read_image(path)
    faces = pipeline.detect(image)
    if not faces:
        raise FaceGateError("no face found in %s" % path)
    face = max(faces, key=lambda f: f.width * f.height)
    return pipeline.analyse_face(image, face), len(faces)


def run_compare(args) -> int:
    config = load_config(args)
    pipeline = FacePipeline.from_config(config)
    try:
        first, count_first = main_face(pipeline, args.first)
        second, count_second = main_face(pipeline, args.second)
    finally:
        pipeline.close()
    distance = 1.0 - float(first.embedding @ second.embedding)
    # one photo against one: the door's rule for a gallery of one person with one template
    threshold = threshold_for(config, pipeline.embedder.model_id, [1]).value
    verdict = "same person" if distance <= threshold else "different people"
    print("distance %.4f (threshold %.3f): %s" % (distance, threshold, verdict))
    for path, count in ((args.first, count_first), (args.second, count_second)):
        if count > 1:
            print("note: %s has %d faces; the largest was used" % (path, count))
    return 0
