"""The host's evaluation commands: `eval-lfw` (LFW View-2 pairs), `eval-identification` (open-set
search and the door's rule), `eval-calibrate` (the distance calibration the decision rule
reads), `eval-threshold` (fit a threshold on some LFW folds, measure it on the others) and
`quantise-embedder` (the embedder's 8-bit copy for ONNX Runtime, and its check)."""

import sys
from pathlib import Path

import numpy as np

from appliance.cli.common import add_config_options, load_config
from appliance.errors import FaceGateError
from appliance.vision.pipeline import FacePipeline
from facegate_host.eval import lfw


def register(commands) -> None:
    parser = commands.add_parser("eval-lfw", help="LFW pairs accuracy, TAR at FAR, detection misses")
    parser.add_argument("--pairs", default="../shared/data/lfw-dev/pairs.txt")
    parser.add_argument("--images", default="../shared/data/lfw-dev/images")
    parser.add_argument("--json", dest="json_out", help="write the full result as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run)
    register_identification(commands)
    register_calibration(commands)
    register_threshold(commands)
    register_int8(commands)
    register_liveness(commands)


def register_liveness(commands) -> None:
    sub = commands.add_parser("eval-liveness", help="choose the liveness threshold on some nuaa-dev subjects, "
                                                    "measure APCER and BPCER per attempt on the others")
    sub.add_argument("--data", default="../shared/data/nuaa-dev", help="live/ and attack/, a folder per subject")
    sub.add_argument("--cache", help="keep the per-frame scores here")
    sub.add_argument("--json", dest="json_out", help="write the figures as JSON here")
    add_config_options(sub)
    sub.set_defaults(handler=run_liveness)


def run_liveness(args) -> int:
    import json
    from dataclasses import replace

    from facegate_host.eval import liveness

    config = load_config(args)
    config = replace(config, liveness=replace(config.liveness, enabled=True))
    data = Path(args.data)
    if not (data / "live").is_dir() or not (data / "attack").is_dir():
        raise FaceGateError("%s needs live/ and attack/ folders, one sub-folder per subject" % data)
    pipeline = FacePipeline.from_config(config)
    try:
        scores = liveness.score_folder(pipeline, data, Path(args.cache) if args.cache else None)
    finally:
        pipeline.close()
    result = liveness.evaluate(scores, config.liveness.frames)
    print("\n".join(liveness.table(result)))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def register_int8(commands) -> None:
    parser = commands.add_parser("quantise-embedder",
                                 help="make the embedder's 8-bit copy for ONNX Runtime (models.embedder_int8)")
    parser.add_argument("--lfw", default="../shared/data/lfw-dev",
                        help="LFW-dev: calibration on the photos no pair uses, the check on the pairs")
    parser.add_argument("--check", action="store_true",
                        help="then compare it with the float embedder on the LFW-dev pairs")
    parser.add_argument("--json", dest="json_out", help="with --check: write the figures as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run_int8)


def run_int8(args) -> int:
    import json

    from appliance.vision.int8_check import describe
    from facegate_host.convert import onnx_int8

    config = load_config(args)
    lfw_dir = Path(args.lfw)
    print("8-bit embedder: %s" % onnx_int8.make_int8_embedder(config, lfw_dir))
    verdict = onnx_int8.check_here(config)
    print("8-bit embedder on this CPU (%s): %s" % (verdict["cpu"], describe(verdict["figures"])))
    if verdict["refused"]:
        print("8-bit embedder: out of the calibration's tolerance here (%s): the door will use the float model"
              % verdict["refused"])
    else:
        print("8-bit embedder: within the calibration's tolerance here; the door uses it")
    if args.check:
        rows = onnx_int8.check(config, lfw_dir)
        print("\n".join(onnx_int8.table(rows)))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def register_threshold(commands) -> None:
    sub = commands.add_parser("eval-threshold", help="fit a threshold on some LFW folds and measure it on the others")
    add_config_options(sub)
    sub.add_argument("--pairs", default="../shared/data/lfw-dev/pairs.txt", help="LFW's pairs file")
    sub.add_argument("--images", default="../shared/data/lfw-dev/images", help="LFW's image folder")
    sub.add_argument("--fit-folds", default="1-3", help="folds that choose the threshold (default 1-3)")
    sub.add_argument("--test-folds", default="4-5", help="folds that measure it (default 4-5)")
    sub.add_argument("--target-far", type=float, default=1e-3, help="false accepts per pair (default 1e-3)")
    sub.set_defaults(handler=_lfw)


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


def _people_folder(parser) -> None:
    parser.add_argument("--images", default="../shared/data/lfw-dev/images",
                        help="a folder with a sub-folder of photos per person")


def register_identification(commands) -> None:
    parser = commands.add_parser("eval-identification",
                                 help="open-set identification: rank-1 and FRR at FAR per probe")
    _people_folder(parser)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3], help="photos enrolled per person")
    parser.add_argument("--min-photos", type=int, default=5, help="people with this many are enrolled")
    parser.add_argument("--far", type=float, default=1e-3, help="target false-accept rate per probe")
    parser.add_argument("--no-visits", action="store_true",
                        help="skip replaying the door's verifier per visit (it records 10 frames per photo once)")
    parser.add_argument("--cache", help="a folder to keep embeddings in for the next evaluation")
    parser.add_argument("--json", dest="json_out", help="write the full result as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run_identification)


def run_identification(args) -> int:
    from pathlib import Path

    from facegate_host.eval import identification

    if args.min_photos <= max(args.k):
        raise FaceGateError("--min-photos must exceed the largest k so every person keeps a probe")
    from facegate_host.eval import calibrate, door_rule, visits

    config = load_config(args)
    pipeline = FacePipeline.from_config(config)
    folder = Path(args.images)
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    model_id = pipeline.embedder.model_id
    try:
        people = identification.list_people(folder)
        names = [photo for photos in people.values() for photo in photos]
        single = calibrate.cached_embeddings(pipeline, folder, names, cache and cache / ("%s.npz" % model_id),
                                             _progress)
        result = identification.run(pipeline, folder, args.k, args.min_photos, args.far, _progress, single)
        result["door_rule"] = door_rule.run(config, model_id, single, people, ks=args.k, min_photos=args.min_photos)
        if not args.no_visits:
            recorded = visits.record(pipeline, config, folder, names,
                                     cache and cache / ("%s-visits.npz" % model_id), _progress)
            result["visits"] = visits.run(config, model_id, recorded, people, ks=args.k, min_photos=args.min_photos)
    finally:
        pipeline.close()
    if args.json_out:
        lfw.write_json(result, Path(args.json_out))
    lines = identification.summary(result) + door_rule.summary(result["door_rule"])
    if "visits" in result:
        lines += visits.summary(result["visits"], config)
    print("\n".join(lines))
    return 0


def register_calibration(commands) -> None:
    parser = commands.add_parser("eval-calibrate",
                                 help="measure the embedder's stranger distances: the door's decision rule")
    _people_folder(parser)
    parser.add_argument("--cache", help="keep the embeddings in this .npz file for the next evaluation")
    parser.add_argument("--out-dir", help="where the calibration JSON goes (default: the package's own)")
    parser.add_argument("--validate", type=int, default=0, metavar="SPLITS",
                        help="instead of writing a calibration, check its bound on people it was not measured on: "
                             "this many random halves of the people, calibrated on one, measured on the other")
    parser.add_argument("--json", dest="json_out", help="--validate: write the figures as JSON here")
    add_config_options(parser)
    parser.set_defaults(handler=run_calibration)


def run_calibration(args) -> int:
    import datetime
    from pathlib import Path

    from facegate_host.eval import calibrate
    from appliance.recognition import calibration

    config = load_config(args)
    pipeline = FacePipeline.from_config(config)
    cache = Path(args.cache) if args.cache else None
    try:
        if args.validate:
            return _validate_calibration(args, config, pipeline, cache)
        pairs, people = calibrate.run(pipeline, Path(args.images), cache, _progress)
        embedder = pipeline.embedder.runner.path.name
        if embedder.endswith(".int8.onnx"):
            from appliance.models import INT8_RECIPE
            embedder += " (%s)" % INT8_RECIPE
    finally:
        pipeline.close()
    protocol = ("%s: every image of every other person against each person enrolled with their first k "
                "photos (nearest template), detector %s at %d, embedder %s, flip %s; pairs under %.2f (one photo "
                "under two names) left out; measured %s"
                % (Path(args.images).resolve().parent.name, config.models.detector, config.detector.input_size,
                   embedder, config.embedder.flip, calibrate.SAME_IMAGE, datetime.date.today().isoformat()))
    protocol += "; bound: 95th percentile over 200 resamplings of the people"
    folder = Path(args.out_dir) if args.out_dir else calibration.FOLDER
    path = calibration.save(calibrate.measure(pipeline.embedder.model_id, pairs, people, protocol), folder)
    for k, (values, _, _) in sorted(pairs.items()):
        print("k=%d: %d stranger distances, 1st percentile %.3f, smallest %.3f"
              % (k, values.size, float(np.percentile(values, 1)), float(values.min())))
    print("wrote %s" % path)
    return 0


def _validate_calibration(args, config, pipeline, cache) -> int:
    from pathlib import Path

    from appliance.recognition.decision import looks_per_visit
    from facegate_host.eval import calibrate, identification

    folder = Path(args.images)
    people = identification.list_people(folder)
    names = [photo for photos in people.values() for photo in photos]
    vectors = calibrate.cached_embeddings(pipeline, folder, names, cache, _progress)
    target, looks = config.matching.false_accept_target, looks_per_visit(config)
    rows = calibrate.validate(vectors, people, target, looks, splits=args.validate)
    print("the bound at the threshold for a target of %.0e per visit (%d looks), %d random halves of %d people: "
          "calibrated on one half, measured on the other" % (target, looks, args.validate, len(people)))
    print("\n".join(calibrate.validation_summary(rows)))
    if args.json_out:
        lfw.write_json({"target": target, "looks": looks, "rows": rows}, Path(args.json_out))
    return 0


def _folds(text: str):
    first, _, last = text.partition("-")
    return set(range(int(first), int(last or first) + 1))


def _lfw(args) -> int:
    from appliance.tune import analysis

    config = load_config(args)
    _, pairs = lfw.parse_pairs(Path(args.pairs))
    fit, test = _folds(args.fit_folds), _folds(args.test_folds)

    def images_of(folds):
        names = set()
        for pair in pairs:
            if pair.fold + 1 in folds:
                names.update((pair.first, pair.second))
        return sorted(names)

    pipeline = FacePipeline.from_config(config)
    try:
        results = {}
        for label, folds in (("fit", fit), ("test", test)):
            names = images_of(folds)
            embedded = lfw.embed_images(pipeline, Path(args.images), names)
            kept = [n for n in names if embedded.get(n) is not None]
            vectors = np.stack([embedded[n] for n in kept])
            people = [n.split("/")[0] for n in kept]
            results[label] = analysis.pair_distances(vectors, people)
    finally:
        pipeline.close()
    advice = analysis.recommend(results["fit"], args.target_far)
    if advice.threshold is None:
        raise FaceGateError("not enough evidence in the fit folds: %s" % "; ".join(advice.missing))
    _, far, frr = analysis.rates(results["test"], [advice.threshold])[0]
    print("fit folds %s: %d genuine, %d impostor distances; threshold for FAR %.1e: %.4f"
          % (args.fit_folds, results["fit"].genuine.size, results["fit"].impostor.size, args.target_far,
             advice.threshold))
    print("test folds %s: %d genuine, %d impostor distances; measured FAR %.2e (%.2fx the target), FRR %.2f%%"
          % (args.test_folds, results["test"].genuine.size, results["test"].impostor.size, far,
             far / args.target_far, 100 * frr))
    return 0
