"""Wiegand output from user space: the pulse widths and gaps the door's busy-wait player
achieves, measured from its own timestamped edges (this host has no GPIO lines; on a board the
sysfs write adds its own cost, a few microseconds per edge)."""

import statistics

from appliance.panel import wiegand
from appliance.panel.wiegand_out import RecordingLines, WiegandOutput
from bench.harness import benchmark

FRAMES = 200


@benchmark("wiegand_timing")
def wiegand_timing() -> dict:
    lines = RecordingLines()
    output = WiegandOutput(lines, 26)
    widths, gaps, refused, replayed = [], [], 0, 0
    for index in range(FRAMES):
        card = (index % 256, (index * 7919) % 65536)
        try:
            replayed += "played" in output.send(*card)
        except Exception:  # noqa: BLE001 - a frame given up on is what is counted here
            refused += 1
            continue
        lows, highs = output.last[0::2], output.last[1::2]
        widths += [high[0] - low[0] for low, high in zip(lows, highs)]
        gaps += [b[0] - a[0] for a, b in zip(highs, lows[1:])]
        assert wiegand.parse(wiegand.bits_from_edges(output.last)) == card
    ordered = sorted(widths)
    return {"protocol": "%d Wiegand 26 frames, pulses of %d us every %d us, played by wiegand_out.play on this host; "
                        "widths and gaps from the edges' own timestamps" % (FRAMES, wiegand.PULSE_US,
                                                                             wiegand.INTERVAL_US),
            "pulse_us": {"min": ordered[0], "median": statistics.median(ordered),
                         "p99": ordered[int(0.99 * (len(ordered) - 1))], "max": ordered[-1]},
            "gap_us": {"min": min(gaps), "median": statistics.median(gaps), "max": max(gaps)},
            "panel_accepts_pulse_us": [20, 100], "frames_given_up": refused, "frames_played_again": replayed}
