"""A building's access panel: the door as a reader that tells the panel whose card is here.

`cards.py` reads and writes a person's card (facility code and number); `wiegand.py` makes and
checks Wiegand 26 and 34-bit frames and the pulses that carry them; `osdp.py` is the door as an
OSDP peripheral device (PD) on a serial line, through libosdp, with the secure channel on.
"""
