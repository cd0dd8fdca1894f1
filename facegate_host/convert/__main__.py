"""tools/convert-rknn: convert the detector, embedder and liveness pair to RKNN and, with --check, measure them."""

import argparse
import json
import logging
import sys
from pathlib import Path

from appliance.config import load
from facegate_host.convert import liveness_check, toolkit
from facegate_host.convert.calibration import IMAGE_SUFFIXES, aligned_crops, calibration_images, detector_frames, pair_images
from facegate_host.convert.check import (check_detector, check_embedder, check_pipeline, reference_pipeline,
                                      table)
from facegate_host.convert.rknn import convert
from appliance.errors import FaceGateError
from appliance.inference.rknn_files import DTYPES, TARGETS, toolkit_dtype, toolkit_for
from appliance.models import models_dir


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="convert-rknn", description=__doc__)
    parser.add_argument("--target", required=True, choices=TARGETS)
    parser.add_argument("--config", type=Path, help="FaceGate config naming the models (default: built-in)")
    parser.add_argument("--models", type=Path, help="installed models (default: $FACEGATE_MODELS_DIR or ./models)")
    parser.add_argument("--detector-size", type=int, default=320, help="detector input side (default 320)")
    # fp16 for both is what the RV1126B ships (board/rv1126b/meta); the original RV1126's meta
    # asks for an i16 embedder, which toolkit v1 supports and toolkit2's RV1126B simulator does not
    parser.add_argument("--detector-dtypes", default="fp16",
                        help="comma-separated, of: %s (default fp16)" % ", ".join(DTYPES))
    parser.add_argument("--embedder-dtypes", default="fp16", help="comma-separated (default fp16)")
    parser.add_argument("--liveness-dtypes", default="",
                        help="comma-separated dtypes for the MiniFASNet pair (default: none)")
    parser.add_argument("--nuaa", type=Path, default=Path("../shared/data/nuaa-dev"),
                        help="nuaa-dev folder: the liveness check's live and printed-photo frames")
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw-dev"),
                        help="LFW-dev folder: calibration from the images no pair uses, the check on the pairs")
    parser.add_argument("--calibration-images", type=Path,
                        help="a folder of photos to calibrate from instead (e.g. the site's enrolment photos)")
    parser.add_argument("--calibration-count", type=int, default=100)
    parser.add_argument("--check", action="store_true", help="also run the quantisation check on the simulator")
    parser.add_argument("--check-images", type=Path, default=Path("../shared/data/seed-samples/probes"),
                        help="photos for the detector check, besides 200 LFW pair images")
    parser.add_argument("--folds", type=int, help="check on the first N LFW folds only (default: all)")
    parser.add_argument("--pipeline", default="fp16:fp16", metavar="DETECTOR:EMBEDDER[,...]",
                        help="with --check, also measure whole pipelines with these dtypes on LFW-dev "
                             "(default fp16:fp16, the RV1126B's choice; 'none' skips it)")
    parser.add_argument("--json", type=Path, default=Path("rknn-check.json"), help="where the check writes")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return run(args)
    except FaceGateError as err:
        print("convert-rknn: %s" % err, file=sys.stderr)
        return 2


def run(args) -> int:
    config = load(args.config)
    models = args.models or models_dir(config.models.dir or None)
    detector_dtypes = [d for d in args.detector_dtypes.split(",") if d]
    embedder_dtypes = [d for d in args.embedder_dtypes.split(",") if d]
    liveness_dtypes = [d for d in args.liveness_dtypes.split(",") if d]
    for dtype in detector_dtypes + embedder_dtypes + liveness_dtypes:
        toolkit_dtype(args.target, dtype)  # refuses a dtype the target's toolkit lacks, before any work
    if toolkit.installed_toolkit() != toolkit_for(args.target):
        raise FaceGateError("target %s needs Rockchip's %s; this environment has %s (rv1126 and rv1109 "
                            "need rknn-toolkit v1 from Rockchip's SDK, the others rknn-toolkit2)"
                            % (args.target, toolkit.DISTRIBUTIONS[toolkit_for(args.target)],
                               toolkit.DISTRIBUTIONS[toolkit.installed_toolkit()]))
    evaluated = pair_images(args.lfw / "pairs.txt") if (args.lfw / "pairs.txt").is_file() else []
    if args.calibration_images:
        calibration = calibration_images(args.calibration_images, args.calibration_count)
    else:
        calibration = calibration_images(args.lfw / "images", args.calibration_count, exclude=evaluated)
    if not args.check:
        reference = reference_pipeline(config, args.detector_size)
        frames = detector_frames(calibration, args.detector_size, reference.detector._fill)
        crops = aligned_crops(reference, calibration)
        for dtype in detector_dtypes:
            print(convert(reference.detector.spec, models, args.target, dtype, frames, args.detector_size))
        for dtype in embedder_dtypes:
            print(convert(reference.embedder.runner.spec, models, args.target, dtype, crops))
        reference.close()
        if liveness_dtypes:
            _convert_liveness(config, models, args.target, liveness_dtypes, calibration)
        return 0
    probes = sorted(p for p in args.check_images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
        if args.check_images.is_dir() else []
    check_set = probes + [args.lfw / "images" / name for name in evaluated[::max(1, len(evaluated) // 200)][:200]]
    report = {
        "command": "tools/convert-rknn " + " ".join(sys.argv[1:]),
        "target": args.target,
        "toolkit_version": toolkit.toolkit_version(),
        "detector_size": args.detector_size,
        "calibration_images": len(calibration),
        "detector_check_images": len(check_set),
        "detector": check_detector(config, models, args.target, detector_dtypes, args.detector_size,
                                   calibration, check_set),
        "embedder": check_embedder(config, models, args.target, embedder_dtypes, calibration, args.lfw,
                                   args.folds),
    }
    report["pipeline"] = []
    for pair in args.pipeline.split(",") if args.pipeline != "none" else []:
        detector_dtype, _, embedder_dtype = pair.partition(":")
        if detector_dtype not in detector_dtypes or embedder_dtype not in embedder_dtypes:
            print("convert-rknn: skipping pipeline %s: this run did not convert those dtypes" % pair,
                  file=sys.stderr)
            continue
        report["pipeline"].append(check_pipeline(config, models, args.target, detector_dtype, embedder_dtype,
                                                 args.detector_size, args.lfw, args.folds))
    lines = table(report)
    if liveness_dtypes:
        report["liveness"] = liveness_check.check_liveness(config, models, args.target, liveness_dtypes, calibration,
                                                           args.nuaa)
        lines += [""] + liveness_check.table(report["liveness"], config.liveness.threshold)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    print("\nfigures written to %s" % args.json)
    return 0


def _convert_liveness(config, models: Path, target: str, dtypes, calibration) -> None:
    pipeline = liveness_check.float_pipeline(config)
    try:
        for runner in pipeline.liveness.runners:
            spec = runner.spec
            crops = liveness_check.calibration_crops(pipeline, calibration, float(spec.extra["crop_scale"]),
                                                     spec.input.size)
            for dtype in dtypes:
                print(convert(spec, models, target, dtype, crops))
    finally:
        pipeline.close()


if __name__ == "__main__":
    sys.exit(main())
