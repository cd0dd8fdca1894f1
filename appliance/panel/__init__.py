"""A building's access panel: the door as a reader that tells the panel whose card is here.

`cards.py` reads and writes a person's card (facility code and number); `wiegand.py` makes and
checks Wiegand 26 and 34-bit frames and the pulses that carry them; `wiegand_out.py` plays them
on two GPIO lines; `osdp.py` is the door as an OSDP peripheral device (PD) on a serial line,
through libosdp, with the secure channel on. For card + face, the card readers: a serial one
(`card_reader.py`), an OSDP one (`osdp_cards.py`) and a Wiegand one's wires (`wiegand_in.py`).
"""


def from_config(panel):
    """The output `panel.protocol` names (config.panel_problems has checked its settings): an OSDP
    peripheral, or Wiegand on two GPIO lines (`wiegand_out.py`)."""
    if panel.protocol == "osdp":
        from appliance.panel import osdp

        return osdp.from_config(panel)
    if panel.protocol == "wiegand":
        from appliance.panel.wiegand_out import SysfsLines, WiegandOutput

        lines = SysfsLines({"D0": panel.wiegand_data0, "D1": panel.wiegand_data1}, panel.wiegand_gpio_root)
        return WiegandOutput(lines, panel.wiegand_bits)
    return None
