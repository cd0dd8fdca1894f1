"""Wiegand 26 and 34-bit frames: a facility code and a card number between two parity bits.

26 bits (H10301): even parity over the first 12 data bits, 8-bit facility, 16-bit card, odd
parity over the last 12. 34 bits (H10306): the same with a 16-bit facility and 16 data bits
on each side. Bits go out most significant first, a 0 as a low pulse on DATA0 and a 1 on
DATA1; a panel accepts pulses of 20-100 us about 0.2-20 ms apart, and ends a frame after
about 25 ms of silence.
"""

from typing import List, Sequence, Tuple

from appliance.errors import FaceGateError

FORMATS = {26: (8, 16), 34: (16, 16)}  # bits -> (facility bits, card bits)
PULSE_US = 50
INTERVAL_US = 2000


def frame(facility: int, number: int, bits: int = 26) -> List[int]:
    """The frame's bits, parity included, first bit first."""
    if bits not in FORMATS:
        raise FaceGateError("Wiegand %d is not a format this door sends; use 26 or 34" % bits)
    facility_bits, card_bits = FORMATS[bits]
    if not (0 <= facility < 1 << facility_bits and 0 <= number < 1 << card_bits):
        raise FaceGateError("card %d:%d does not fit Wiegand %d (facility 0-%d, number 0-%d)"
                            % (facility, number, bits, (1 << facility_bits) - 1, (1 << card_bits) - 1))
    value = (facility << card_bits) | number
    data = [(value >> shift) & 1 for shift in range(facility_bits + card_bits - 1, -1, -1)]
    half = len(data) // 2
    return [sum(data[:half]) % 2] + data + [1 - sum(data[half:]) % 2]


def parse(bits: Sequence[int]) -> Tuple[int, int]:
    """(facility, number) from a received frame; a wrong length or parity is an error."""
    if len(bits) not in FORMATS:
        raise FaceGateError("a Wiegand frame of %d bits: expected 26 or 34" % len(bits))
    facility_bits, card_bits = FORMATS[len(bits)]
    data = list(bits[1:-1])
    half = len(data) // 2
    if bits[0] != sum(data[:half]) % 2 or bits[-1] != 1 - sum(data[half:]) % 2:
        raise FaceGateError("Wiegand %d frame fails its parity: a bit was lost or changed" % len(bits))
    value = int("".join(map(str, data)), 2)
    return value >> card_bits, value & ((1 << card_bits) - 1)


def packed(bits: Sequence[int]) -> bytes:
    """The frame as bytes, first bit in the top of the first byte (OSDP's raw Wiegand card data)."""
    padded = list(bits) + [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, padded[i:i + 8])), 2) for i in range(0, len(padded), 8))


def unpacked(data: bytes, bits: int) -> List[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(bits)]


def pulses(bits: Sequence[int], pulse_us: int = PULSE_US, interval_us: int = INTERVAL_US) -> List[Tuple[int, str, int]]:
    """The edges that carry a frame: (time in us from its start, line "D0" or "D1", level), both
    lines idle high; a line driver plays them."""
    edges = []
    for index, bit in enumerate(bits):
        start, line = index * interval_us, "D1" if bit else "D0"
        edges += [(start, line, 0), (start + pulse_us, line, 1)]
    return edges


def bits_from_edges(edges: Sequence[Tuple[int, str, int]], min_pulse_us: int = 20, max_pulse_us: int = 100,
                    min_gap_us: int = 200) -> List[int]:
    """Decode what a panel would: each low pulse of an allowed width is a bit; a pulse too short
    or too long, or one too soon after the last, is an error that names it."""
    low_since, bits, last_end = {}, [], None
    for time_us, line, level in sorted(edges):
        if level == 0:
            if last_end is not None and time_us - last_end < min_gap_us:
                raise FaceGateError("a %s pulse %d us after the last: a panel needs %d" % (
                    line, time_us - last_end, min_gap_us))
            low_since[line] = time_us
        elif line in low_since:
            width = time_us - low_since.pop(line)
            if not min_pulse_us <= width <= max_pulse_us:
                raise FaceGateError("a %s pulse of %d us: a panel takes %d-%d" % (line, width, min_pulse_us,
                                                                                 max_pulse_us))
            bits.append(1 if line == "D1" else 0)
            last_end = time_us
    return bits
