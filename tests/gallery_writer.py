"""Helper process for the crash test: enrols people with 3 templates each, forever, until killed."""

import sys

import numpy as np

from appliance.gallery.store import GalleryStore, Template

store = GalleryStore(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
number = 0
while True:
    vectors = rng.normal(size=(3, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.enrol("person %s-%d" % (sys.argv[2], number), [Template(v, crop=b"x" * 20000) for v in vectors], "model-a")
    number += 1
    print(number, flush=True)
