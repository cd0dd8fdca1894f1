"""`facegate identify`: name every face in a photo or a video stream (the seed's predict/rtspPredict)."""

import time

import cv2

from appliance.cli.common import add_config_options, add_gallery_option, load_config, open_gallery
from appliance.cli.detect import write_image
from appliance.errors import FaceGateError
from appliance.recognition.identify import StreamIdentifier, identify_config, identify_frame
from appliance.gallery.index import GalleryIndex
from appliance.vision.labels import draw_label


def register(commands) -> None:
    parser = commands.add_parser("identify", help="name every face in an image or a video")
    parser.add_argument("image", nargs="?", help="a photo")
    parser.add_argument("--video", help="a video file, RTSP URL, camera index or GStreamer pipeline")
    parser.add_argument("--out", help="write an annotated copy of the photo here")
    add_config_options(parser)
    add_gallery_option(parser)
    parser.set_defaults(handler=run)


def _label(decision) -> str:
    match = decision.match
    if decision.accepted:
        return "%s (distance %.3f, margin %.3f)" % (match.person.name, match.distance, match.margin)
    return "unknown (%s)" % decision.reason


def _ascii_name(decision) -> str:
    """What OpenCV's ASCII font can draw, when no installed font has the name's script."""
    if not decision.accepted:
        return "unknown"
    name = decision.match.person.name
    return name if name.isascii() else decision.match.person.id


def run(args) -> int:
    from appliance.vision.pipeline import FacePipeline, read_image

    if bool(args.image) == bool(args.video):
        raise FaceGateError("give either IMAGE or --video SOURCE")
    config = identify_config(load_config(args))
    pipeline = FacePipeline.from_config(config)
    store = open_gallery(args, config, pipeline.embedder.model_id)
    try:
        index = GalleryIndex(store)
        if not len(index):
            print("note: the gallery is empty; every face will be unknown")
        if args.video:
            return _run_video(args, config, pipeline, index)
        image = read_image(args.image)
        results = identify_frame(pipeline, index, config, image)
        print("%s: %d face%s" % (args.image, len(results), "" if len(results) == 1 else "s"))
        for number, (result, decision) in enumerate(results, 1):
            x1, y1, x2, y2 = (int(v) for v in result.face.box)
            quality = "" if result.quality.passed else "  [quality: %s]" % "; ".join(result.quality.reasons)
            print("  %d. (%d, %d)-(%d, %d) %s%s" % (number, x1, y1, x2, y2, _label(decision), quality))
        if args.out:
            for result, decision in results:
                x1, y1, x2, y2 = (int(v) for v in result.face.box)
                colour = (0, 200, 0) if decision.accepted else (0, 0, 230)
                cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
                name = decision.match.person.name if decision.accepted else "unknown"
                distance = " %.2f" % decision.match.distance if decision.match.person is not None else ""
                size = max(18, min(40, (x2 - x1) // 6))  # readable on a large group photo
                draw_label(image, name + distance, (x1, max(size, y1 - 5)), colour,
                           fallback=_ascii_name(decision) + distance, size=size)
            write_image(args.out, image)
        return 0
    finally:
        store.close()
        pipeline.close()


def _run_video(args, config, pipeline, index) -> int:
    from appliance.camera import LatestFrameReader

    reader = LatestFrameReader(args.video)
    identifier = StreamIdentifier(pipeline, index, config)
    started, last_seen = time.monotonic(), None
    try:
        while True:
            frame = reader.latest()
            if frame is None:
                break
            index.refresh()  # picks up enrolments made while the stream runs
            results = identifier.frame(frame.image)
            # print when who is in view changes, not every frame
            seen = sorted(d.match.person.name if d.accepted else "unknown" for _, d in results)
            if seen != last_seen:
                labels = sorted(_label(d) if d.accepted else "unknown" for _, d in results)
                print("%7.2fs frame %d: %s" % (frame.captured - started, frame.number,
                                               ", ".join(labels) if labels else "no face"), flush=True)
                last_seen = seen
    finally:
        reader.close()
    print("processed %d frames (%d still, named from the last analysed one), dropped %d stale ones"
          % (identifier.analysed + identifier.reused, identifier.reused, reader.dropped))
    return 0
