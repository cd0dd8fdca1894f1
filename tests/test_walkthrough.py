"""A newcomer's first door, as README's quick start says it: its commands are read from README
itself and run on a fresh folder, so the README and the commands cannot drift apart.

The board's paths become this machine's: photos/ a copy of the seed gallery, /dev/video0 a
video of an enrolled visitor, the config a file written by `facegate config` (as README says)
with the relay on a pseudo-terminal. Everything else is run as written.
"""

import re
import shlex
import subprocess
import sys

from conftest import MODELS, ROOT, SEED, run_cli

from appliance.config import set_in_text
from facegate_host.emulator import RelayEmulator


def quick_start(heading: str):
    """The commands of the first ```sh block under `heading` in README.md, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_installers_quick_start_works_as_written(tmp_path):
    import shutil

    commands = quick_start("## Quick start: an installer at the door")
    assert [c[:2] for c in commands][:2] == [["facegate", "enroll"], ["facegate", "relay"]]
    photos = tmp_path / "photos"
    shutil.copytree(SEED / "gallery", photos)
    clip = tmp_path / "entrance.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip),
                    str(SEED / "probes" / "obama.jpg"), "--seconds", "2"], check=True)
    emulator = RelayEmulator(link=str(tmp_path / "relay"))
    config = tmp_path / "door.toml"
    written = run_cli("config")  # "elsewhere write one with `facegate config > door.toml`"
    assert written.returncode == 0
    text = written.stdout
    for name, value in (("models.dir", str(MODELS)), ("relay.port", emulator.path), ("camera.source", str(clip)),
                        ("gallery.path", str(tmp_path / "gallery.db")), ("audit.path", str(tmp_path / "audit.db"))):
        text = set_in_text(text, name, value)
    config.write_text(text)
    board = {"photos/": str(photos), "/dev/video0": str(clip), "/etc/facegate/config.toml": str(config)}
    outputs = []
    try:
        for words in commands:
            assert words[0] == "facegate", words
            words = [board.get(word, word) for word in words[1:]]
            if str(config) not in words:
                words += ["--config", str(config)]  # "and add --config door.toml"
            result = run_cli(*words, cwd=tmp_path)
            assert result.returncode == 0, (words, result.stdout, result.stderr)
            outputs.append(result.stdout)
    finally:
        emulator.close()
    enrolled, relay, identified, checked, ran = outputs[:5]
    assert "5 people enrolled" in enrolled
    assert "sent the unlock command" in relay and any(e.on for e in emulator.events)
    assert "obama" in identified
    assert checked.strip().endswith(": ok")
    assert "grants 1" in ran and not emulator.is_on()
