"""`facegate tune ...`: threshold evidence for the installer (report, label, replay, apply, lfw)."""

import os
import shutil
from pathlib import Path

import numpy as np

from appliance.cli.common import add_config_options, load_config, pad
from appliance.errors import FaceGateError
from appliance.recognition.decision import looks_per_visit, looseness, threshold_for

STRANGER = "stranger"
ATTEMPT_KINDS = ("grant", "deny", "capture")  # audit events that carry a probe embedding


def register(commands) -> None:
    parser = commands.add_parser("tune", help="choose and apply the distance threshold from evidence")
    actions = parser.add_subparsers(dest="tune_command", metavar="ACTION")
    actions.required = True

    def action(name, help_text):
        sub = actions.add_parser(name, help=help_text)
        add_config_options(sub)
        sub.add_argument("--gallery", help="gallery file, overriding gallery.path")
        sub.add_argument("--audit", help="audit trail file, overriding audit.path")
        return sub

    sub = action("report", "error rates across thresholds and a recommended threshold")
    sub.add_argument("--target-far", type=float, default=1e-3, help="false accepts per visit (default 1e-3)")
    sub.add_argument("--plot", help="write both distributions and the DET curve to this PNG")
    sub.set_defaults(handler=_report)
    sub = action("label", "list recent attempts, or label one as a person or a stranger")
    sub.add_argument("event", nargs="?", type=int, help="audit event id to label")
    sub.add_argument("--person", help="the person it really was (name or id)")
    sub.add_argument("--stranger", action="store_true", help="it was nobody enrolled")
    sub.add_argument("--limit", type=int, default=30)
    sub.set_defaults(handler=_label)
    sub = action("capture", "record attempts of a person standing at the door, labelled as them")
    sub.add_argument("person", help="who is standing there (name or id, enrolled)")
    sub.add_argument("--count", type=int, default=10, help="attempts to record (default 10)")
    sub.add_argument("--camera", help="camera source, overriding camera.source")
    sub.set_defaults(handler=_capture)
    sub = action("replay", "run recorded attempts through the decision rule again")
    sub.add_argument("--threshold", type=float, required=True, help="the distance threshold to try")
    sub.add_argument("--margin", type=float, help="the margin to try (default: matching.min_margin)")
    sub.set_defaults(handler=_replay)
    sub = actions.add_parser("apply", help="write the threshold into the config file (with a backup)")
    sub.add_argument("threshold", type=float)
    sub.add_argument("--config", required=True,
                     help="the config file to change (with --door: the admin config with [mqtt])")
    sub.add_argument("--door", help="send it to this remote door over MQTT instead (live, not persisted)")
    sub.add_argument("--timeout", type=float, default=10.0)
    sub.add_argument("--force", action="store_true",
                     help="apply a threshold looser than the false-accept target allows (it lets more strangers in)")
    sub.set_defaults(handler=_apply)
    sub = actions.add_parser("undo", help="put back the config file as it was before the last 'tune apply'")
    sub.add_argument("--config", required=True, help="the config file 'tune apply' changed")
    sub.set_defaults(handler=_undo)


def _paths(args, config):
    return config.gallery.path, config.audit.path  # --gallery and --audit are in the config (config.FLAGS)


def _gallery_matrix(path):
    from appliance.gallery.store import GalleryStore

    if not Path(path).exists():
        raise FaceGateError("gallery %s does not exist: enrol people first (facegate enroll)" % path)
    store = GalleryStore(path)
    try:
        ids, matrix, _ = store.matrix()
        people = {p.id: p for p in store.people()}
        return ids, matrix, people, store.model_id
    finally:
        store.close()


def _attempts(path, model_id):
    from appliance.audit import AuditStore

    if not Path(path).exists():
        return []
    store = AuditStore(path)
    try:
        return [e for e in store.events(limit=10 ** 7, kinds=ATTEMPT_KINDS)
                if e.embedding is not None and e.model_id == model_id]
    finally:
        store.close()


def _granted(event) -> bool:
    """What the door decided for this attempt (a capture records it in its detail)."""
    return event.kind == "grant" or (event.kind == "capture" and event.detail.get("decided") == "grant")


def _report(args) -> int:
    from appliance.tune import analysis

    config = load_config(args)
    gallery_path, audit_path = _paths(args, config)
    ids, matrix, people, model_id = _gallery_matrix(gallery_path)
    if len(people) < 2:
        print("too little evidence: the gallery holds %d people; enrol at least two (better: dozens) "
              "before tuning" % len(people))
        return 1
    attempts = _attempts(audit_path, model_id)
    labelled = [e for e in attempts if e.label]
    evidence = site_evidence(ids, matrix, labelled)
    if labelled:
        probes = np.stack([e.embedding for e in labelled])
    print("evidence: %d people, %d templates, %d labelled attempts -> %d genuine and %d impostor distances"
          % (len(people), len(ids), len(labelled), evidence.genuine.size, evidence.impostor.size))
    if not labelled:
        print("note: no labelled attempts yet; record some with 'facegate tune label' after people "
              "have tried the door")
    _liveness_line(config, attempts)
    counts = np.unique(np.asarray(ids), return_counts=True)[1].tolist()
    current = threshold_for(config, model_id, counts)
    print("the door now: %s" % current.describe())
    if labelled:
        flagged = analysis.contradictions(probes, [e.label for e in labelled], matrix, ids, current.value)
        for flag in flagged:
            event = labelled[flag.index]
            named = people[flag.nearest].name if flag.nearest in people else flag.nearest
            print("WARNING: event %d is labelled %s, but the door accepts that face as %s (distance %.3f): a wrong "
                  "label? check its snapshot ('facegate audit --snapshot %d --out e.jpg'), then 'facegate tune "
                  "label %d --person NAME' or '--stranger'"
                  % (event.id, "a stranger" if event.label == STRANGER else
                     (people[event.label].name if event.label in people else event.label), named, flag.distance,
                     event.id, event.id))
        if flagged:
            print("WARNING: %d of %d labelled attempts contradict their labels; the figures below include them"
                  % (len(flagged), len(labelled)))
    print("\nthreshold  false accepts/comparison  false rejects")
    # the rows, with the door's own threshold among them where it falls, marked
    rows = sorted(set(np.round(np.arange(0.30, 0.81, 0.05), 2).tolist()) | {round(current.value, 3)})
    for threshold, far, frr in analysis.rates(evidence, np.asarray(rows)):
        marker = "  <- the door now" if abs(threshold - current.value) < 5e-4 else ""
        print("  %.3f     %10.2e               %6.2f%%%s" % (threshold, far, 100 * frr, marker))
    # a stranger's visit compares every look it is allowed with every person: that many chances
    advice = analysis.recommend(evidence, args.target_far, len(people) * looks_per_visit(config))
    print()
    print(analysis.text_histogram(evidence, threshold=advice.threshold))
    if args.plot:
        # the recommendation when there is one, else the threshold the door applies now
        analysis.plot(evidence, args.plot, advice.threshold if advice.threshold is not None else current.value)
        print("\nwrote %s" % args.plot)
    print()
    prior = _calibrated(config, model_id, counts, args.target_far)
    if advice.threshold is None and prior is None:
        print("no recommendation for %.1e false accepts per visit with %d people; missing:" % (
            args.target_far, len(people)))
        for item in advice.missing:
            print("  - %s" % item)
        return 1
    if prior is not None:
        # the embedder's calibration is the prior: it needs no site evidence at all
        frr = "%.1f%%" % (100 * np.mean(evidence.genuine > prior.value)) if evidence.genuine.size >= 10 \
            else "unknown (fewer than 10 genuine comparisons)"
        print("from the embedder's calibration: threshold %.3f for %.1e false accepts per visit with %d people, "
              "%d templates; expected false rejects on this site's evidence %s"
              % (prior.value, args.target_far, prior.people, prior.templates, frr))
    if advice.threshold is None:
        print("the site's own evidence is too thin to refine it (%s); the door already applies the calibrated "
              "threshold while matching.distance_threshold is 0 (set matching.false_accept_target = %.0e)"
              % ("; ".join(advice.missing), args.target_far))
        return 0
    chosen = advice.threshold if prior is None else min(advice.threshold, prior.value)
    print("from this site's evidence: threshold %.3f (%.1e per comparison); expected false rejects %.1f%%"
          % (advice.threshold, advice.per_comparison_far, 100 * advice.expected_frr))
    print("recommended threshold %.3f (the stricter of the two) for %.1e false accepts per visit; expected false "
          "rejects %.1f%%; apply with: facegate tune apply %.3f --config FILE"
          % (chosen, args.target_far, 100 * np.mean(evidence.genuine > chosen), chosen))
    return 0


def site_evidence(ids, matrix, labelled):
    """Genuine and impostor distances: the gallery's own pairs and the labelled attempts'."""
    from appliance.tune import analysis

    evidence = analysis.pair_distances(matrix, ids)
    if labelled:
        probes = np.stack([e.embedding for e in labelled])
        attempt = analysis.probe_distances(probes, [e.label for e in labelled], matrix, ids)
        evidence = analysis.Evidence(np.concatenate([evidence.genuine, attempt.genuine]),
                                     np.concatenate([evidence.impostor, attempt.impostor]))
    return evidence


def threshold_preview(config, thresholds):
    """[(threshold, false accepts per comparison, false rejects)] on this site's evidence, or []
    when the gallery holds fewer than two people: what a change would do, before it is made."""
    from appliance.tune import analysis

    ids, matrix, people, model_id = _gallery_matrix(config.gallery.path)
    if len(people) < 2:
        return []
    labelled = [e for e in _attempts(config.audit.path, model_id) if e.label]
    return analysis.rates(site_evidence(ids, matrix, labelled), np.asarray(thresholds, float))


def _liveness_line(config, attempts) -> None:
    """What liveness did to the door's attempts: how many it refused, and how close the people
    it let in came to its threshold (labelled people refused as not live are its false rejects)."""
    scored = [e for e in attempts if e.detail.get("liveness") is not None]
    if not config.liveness.enabled:
        print("liveness: OFF in this config (a photo of an enrolled person would be let in)")
        return
    if not scored:
        print("liveness: on (threshold %.2f over %d frames); no scored attempts yet" % (
            config.liveness.threshold, config.liveness.frames))
        return
    refused = [e for e in scored if str(e.detail.get("reason", "")).startswith("not live")]
    people = [e for e in refused if e.label and e.label != STRANGER]
    granted = [e.detail["liveness"] for e in scored if _granted(e)]
    print("liveness: on (threshold %.2f over %d frames); %d of %d scored attempts refused as not live%s%s" % (
        config.liveness.threshold, config.liveness.frames, len(refused), len(scored),
        "; %d of them labelled as enrolled people (its false rejects: events %s)" % (
            len(people), ", ".join(str(e.id) for e in people[:10])) if people else "",
        "; the lowest granted attempt scored %.2f" % min(granted) if granted else ""))


def _calibrated(config, model_id, counts, target):
    """The threshold the embedder's calibration gives for this gallery and target, or None."""
    from dataclasses import replace

    from appliance.errors import ConfigError

    matching = replace(config.matching, false_accept_target=target, distance_threshold=0.0)
    try:
        return threshold_for(replace(config, matching=matching), model_id, counts)
    except ConfigError:
        return None


def _label(args) -> int:
    from appliance.audit import AuditStore
    from appliance.gallery.store import GalleryStore

    config = load_config(args)
    gallery_path, audit_path = _paths(args, config)
    if not Path(audit_path).exists():
        raise FaceGateError("audit trail %s does not exist: run the door first" % audit_path)
    audit = AuditStore(audit_path)
    try:
        if args.event is None:
            attempts = audit.events(limit=args.limit, kinds=ATTEMPT_KINDS, newest=True)
            if not attempts:
                print("no attempts recorded yet: let people try the door, then label them here")
            for event in attempts:
                # a denial names nobody: its nearest person is a clue, never who was denied
                who = event.person_name or "stranger (nearest: %s)" % (event.detail.get("nearest") or {}).get("name", "-")
                print("%6d %s %-7s %s distance %s  label: %s" % (
                    event.id, event.time, event.kind, pad(who, 28),
                    "%.3f" % event.distance if event.distance is not None else "-", event.label or "-"))
            return 0
        if bool(args.person) == bool(args.stranger):
            raise FaceGateError("give either --person WHO or --stranger")
        label = STRANGER
        if args.person:
            store = GalleryStore(gallery_path)
            try:
                label = store.find(args.person).id
            finally:
                store.close()
        audit.set_label(args.event, label)
        print("event %d labelled %s" % (args.event, label))
        return 0
    finally:
        audit.close()


def _capture(args) -> int:
    from appliance.audit import AuditStore
    from appliance.camera import LatestFrameReader
    from appliance.recognition.attempt import attempt_event
    from appliance.recognition.verification import DENY, GRANT, Verifier
    from appliance.gallery.index import GalleryIndex
    from appliance.gallery.store import GalleryStore
    from appliance.vision.pipeline import FacePipeline

    config = load_config(args)
    gallery_path, audit_path = _paths(args, config)
    pipeline = FacePipeline.from_config(config)
    store = GalleryStore(gallery_path, model_id=pipeline.embedder.model_id)
    audit = AuditStore(audit_path)
    reader = None
    try:
        person = store.find(args.person)
        verifier = Verifier(config, pipeline, GalleryIndex(store))
        reader = LatestFrameReader(config.camera.source, config.camera.realtime)
        recorded = refused = 0
        print("recording %d attempts of %s: stand in front of the camera, step away and back between "
              "attempts" % (args.count, person.name))
        while recorded < args.count:
            frame = reader.latest()
            if frame is None:
                break
            outcome = verifier.step(frame.image, frame.captured, frame.number)
            if outcome.kind not in (GRANT, DENY):
                continue
            nearest = outcome.decision.match.person
            if nearest is None or nearest.id != person.id:
                # the label is the evidence: a face nearer to someone else is not recorded as this person
                refused += 1
                print("  not recorded: this face is nearest to %s (distance %.3f), not %s"
                      % (nearest.name if nearest else "nobody", outcome.decision.match.distance, person.name))
                if refused >= 3:
                    raise FaceGateError("three attempts in a row were nearer to someone else than to %s: is %s "
                                        "the person in front of the camera? (%d recorded)"
                                        % (person.name, person.name, recorded))
                continue
            refused = 0
            # recorded as the door records an attempt, labelled with who it really was
            audit.record(attempt_event("capture", outcome, frame.image, verifier.model_id, label=person.id))
            recorded += 1  # one per appearance: the next attempt starts when they step away and back
            print("  attempt %d: %s, nearest %s at distance %.3f" % (
                recorded, "grant" if outcome.kind == GRANT else "deny", person.name, outcome.decision.match.distance))
        print("recorded %d attempts labelled %s in %s" % (recorded, person.name, audit_path))
        return 0 if recorded == args.count else 1
    finally:
        if reader is not None:
            reader.close()
        audit.close()
        store.close()
        pipeline.close()


def _replay(args) -> int:
    from appliance.recognition.decision import decide
    from appliance.gallery.index import GalleryIndex
    from appliance.gallery.store import GalleryStore
    from dataclasses import replace

    config = load_config(args)
    gallery_path, audit_path = _paths(args, config)
    store = GalleryStore(gallery_path)
    try:
        index = GalleryIndex(store)
        attempts = _attempts(audit_path, store.model_id)
        if not attempts:
            print("no recorded attempts with embeddings of model %s in %s" % (store.model_id, audit_path))
            return 1
        now_rule = config.matching
        new_rule = replace(now_rule, distance_threshold=args.threshold,
                           min_margin=now_rule.min_margin if args.margin is None else args.margin)
        changed = wrong_now = wrong_then = 0
        for event in attempts:
            match = index.search(event.embedding)
            was = _granted(event)
            then = decide(match, args.threshold, new_rule).accepted
            if then != was:
                changed += 1
                print("  event %d (%s): %s -> %s  (%s, distance %.3f)" % (
                    event.id, event.time, "grant" if was else "deny", "grant" if then else "deny",
                    match.person.name if match.person else "-", match.distance))
            if event.label:
                right = event.label != STRANGER and match.person is not None and match.person.id == event.label
                wrong_now += was != right
                wrong_then += then != right
        labelled = sum(1 for e in attempts if e.label)
        print("%d attempts replayed at threshold %.3f, margin %.3f: %d decisions would change"
              % (len(attempts), new_rule.distance_threshold, new_rule.min_margin, changed))
        if labelled:
            print("labelled attempts decided wrongly: %d as recorded, %d at the new setting (of %d)"
                  % (wrong_now, wrong_then, labelled))
        return 0
    finally:
        store.close()


def _apply(args) -> int:
    from appliance import config as config_module

    if not 0 < args.threshold < 2:
        raise FaceGateError("a cosine-distance threshold lies between 0 and 2")
    if args.door:
        from appliance.cli.admin import AdminSession

        args.site_gallery = None
        session = AdminSession(args)
        try:
            return session.send("set_threshold", {"distance_threshold": args.threshold, "force": args.force})
        finally:
            session.close()
    path = Path(args.config)
    if not path.is_file():  # a typo must not write a new file the door never reads
        raise FaceGateError("config file %s does not exist: give the door's own config file" % path)
    current = config_module.load(path)
    danger = looseness(current, current.models.embedder, config_module.gallery_template_counts(current.gallery.path),
                       args.threshold)
    if danger and not args.force:
        raise FaceGateError("not applied: %s (--force applies it all the same)" % danger)
    updated = config_module.set_in_file(path, "matching.distance_threshold", round(args.threshold, 4))
    if danger:  # forced: the file says that this risk was chosen, so the door runs with it
        print("WARNING: %s" % danger)
        updated = config_module.set_in_text(updated, "matching.allow_looser_than_target", True, str(path))
    previous = current.matching.distance_threshold
    backup = _replace_config(path, updated)
    from appliance.cli.common import record_change

    record_change(config_module.load(path), "set_threshold", origin=getattr(args, "origin", None),
                  distance_threshold=args.threshold,
                  previous_threshold=previous, config_file=str(path), backup=str(backup))
    print("%s: matching.distance_threshold = %.4f, was %.4f (previous file kept as %s; 'facegate tune undo' "
          "restores it); restart the door, or send it live with 'facegate admin set-threshold'"
          % (path, args.threshold, previous, backup.name))
    return 0


def _backups(path: Path):
    """The numbered copies tune apply kept of `path`, oldest first."""
    numbered = []
    for candidate in path.parent.glob(path.name + ".bak.*"):
        suffix = candidate.name[len(path.name) + len(".bak."):]
        if suffix.isdigit():
            numbered.append((int(suffix), candidate))
    return [candidate for _, candidate in sorted(numbered)]


def _replace_config(path: Path, text: str) -> Path:
    """Install `text` as `path` atomically, keeping the old file as the next numbered backup."""
    from appliance import config as config_module

    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    config_module.load(temporary)  # never install a file that does not load
    existing = _backups(path)
    number = int(existing[-1].name.rsplit(".", 1)[1]) + 1 if existing else 1
    backup = path.with_name("%s.bak.%d" % (path.name, number))
    shutil.copy2(path, backup)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return backup


def _undo(args) -> int:
    from appliance import config as config_module
    from appliance.cli.common import record_change

    path = Path(args.config)
    if not path.is_file():
        raise FaceGateError("config file %s does not exist: give the door's own config file" % path)
    backups = _backups(path)
    if not backups:
        raise FaceGateError("no earlier version of %s to go back to ('tune apply' keeps one per change as "
                            "%s.bak.N)" % (path, path.name))
    newest = backups[-1]
    was = config_module.load(path).matching.distance_threshold
    restored = config_module.load(newest)  # refuses a backup that no longer loads
    undone = path.with_name(path.name + ".undone")
    shutil.copy2(path, undone)
    os.replace(newest, path)
    record_change(restored, "set_threshold", distance_threshold=restored.matching.distance_threshold,
                  previous_threshold=was, config_file=str(path), undo=True)
    print("%s: back to %s (matching.distance_threshold = %.4f, was %.4f); the undone file is kept as %s; %d "
          "earlier version%s left" % (path, newest.name, restored.matching.distance_threshold, was, undone.name,
                                      len(backups) - 1, "" if len(backups) == 2 else "s"))
    return 0
