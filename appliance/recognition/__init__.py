"""Recognition: from a camera frame to a decision about one attempt, and the attempt's record.

A frame's way: `verification.Verifier.step` asks the vision pipeline for faces, `tracker`
keeps to one person across frames, good frames are embedded and fused, the gallery index
finds the nearest people, `decision` applies the door's rule (the threshold from the
embedder's `calibration` and the false-accept target), and `attempt` turns a grant or a denial
into its audit event with a snapshot. The door (`appliance/door/`) only receives that event:
it knows nothing of faces or galleries.
"""
