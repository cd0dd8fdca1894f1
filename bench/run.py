"""`make bench`: run the benchmarks, write their figures to JSON and a short table."""

import argparse
import datetime
import importlib
import json
import platform
import sys
from pathlib import Path

from bench.harness import BENCHMARKS

MODULES = ("bench.vision", "bench.gallery", "bench.door", "bench.mqtt", "bench.seed_job", "bench.cpu_budget", "bench.web", "bench.panel")


def _rows(prefix: str, value):
    if isinstance(value, dict) and "median_ms" in value:
        yield prefix, "%9.2f ms median %9.2f ms p95" % (value["median_ms"], value["p95_ms"])
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _rows("%s.%s" % (prefix, key), inner)
    else:
        yield prefix, str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--only", nargs="*", help="benchmark names to run (default: all)")
    args = parser.parse_args()
    for name in MODULES:
        importlib.import_module(name)
    chosen = args.only or list(BENCHMARKS)
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"python": platform.python_version(), "processor": platform.machine(),
                           "platform": platform.platform()}}
    for name in chosen:
        if name not in BENCHMARKS:
            print("unknown benchmark %s; known: %s" % (name, ", ".join(BENCHMARKS)), file=sys.stderr)
            return 2
        print("running %s ..." % name, file=sys.stderr)
        results[name] = BENCHMARKS[name]()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name in chosen:
        for label, text in _rows(name, results[name]):
            print("%-44s %s" % (label, text))
    print("figures written to %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
