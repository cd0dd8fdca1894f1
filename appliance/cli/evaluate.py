"""`facegate eval-lfw`: the LFW View-2 pairs protocol on any pairs file and image folder."""

import sys

from appliance.cli.common import add_config_options, load_config
from appliance.eval import lfw
from appliance.vision.pipeline import FacePipeline


def register(commands) -> None:
    parser = commands.add_parser("eval-lfw", help="LFW pairs accuracy, TAR at FAR, detection misses")
    parser.add_argument("--pairs", default="../shared/data/lfw-dev/pairs.txt")
    parser.add_argument("--images", default="../shared/data/lfw-dev/images")
    parser.add_argument("--json", dest="json_out", help="write the full result as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run)
    register_identification(commands)


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and (done % 50 == 0 or done == total):
        sys.stderr.write("\r  embedding %d/%d images" % (done, total))
        if done == total:
            sys.stderr.write("\n")


def run(args) -> int:
    from pathlib import Path

    pipeline = FacePipeline.from_config(load_config(args))
    try:
        result = lfw.run(pipeline, Path(args.pairs), Path(args.images), _progress)
    finally:
        pipeline.close()
    result["config"] = {"detector": pipeline.config.detector.__dict__,
                        "embedder": pipeline.config.embedder.__dict__,
                        "backend": pipeline.config.models.backend}
    if args.json_out:
        lfw.write_json(result, Path(args.json_out))
    print(lfw.summary(result))
    return 0


def register_identification(commands) -> None:
    parser = commands.add_parser("eval-identification",
                                 help="open-set identification: rank-1 and FRR at FAR per probe")
    parser.add_argument("--images", default="../shared/data/lfw-dev/images",
                        help="a folder with a sub-folder of photos per person")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3], help="photos enrolled per person")
    parser.add_argument("--min-photos", type=int, default=5, help="people with this many are enrolled")
    parser.add_argument("--far", type=float, default=1e-3, help="target false-accept rate per probe")
    parser.add_argument("--json", dest="json_out", help="write the full result as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run_identification)


def run_identification(args) -> int:
    from pathlib import Path

    from appliance.eval import identification

    if args.min_photos <= max(args.k):
        from appliance.errors import FaceGateError
        raise FaceGateError("--min-photos must exceed the largest k so every person keeps a probe")
    pipeline = FacePipeline.from_config(load_config(args))
    try:
        result = identification.run(pipeline, Path(args.images), args.k, args.min_photos,
                                    args.far, _progress)
    finally:
        pipeline.close()
    if args.json_out:
        lfw.write_json(result, Path(args.json_out))
    print("\n".join(identification.summary(result)))
    return 0
