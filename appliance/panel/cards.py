"""A person's access card as a panel knows it: a facility (site) code and a card number."""

from typing import Tuple

from appliance.errors import FaceGateError


def parse_card(text: str) -> Tuple[int, int]:
    """'7:12345' or '12345' (facility 0) as (facility, number)."""
    facility, _, number = text.strip().rpartition(":")
    try:
        values = (int(facility or 0), int(number))
    except ValueError:
        raise FaceGateError("card %r: write FACILITY:NUMBER or NUMBER, in decimal (like 7:12345)" % text) from None
    if not (0 <= values[0] <= 65535 and 0 <= values[1] <= 0xFFFFFFFF):
        raise FaceGateError("card %r: the facility code is 0-65535 and the number 0-4294967295" % text)
    return values
