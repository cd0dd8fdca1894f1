import pytest

from appliance import config as config_module
from appliance.errors import ConfigError


def test_defaults_file_round_trips(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(config_module.defaults_toml())
    assert config_module.load(path) == config_module.Config()


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("[detector]\ninput_sise = 320\n")
    with pytest.raises(ConfigError) as err:
        config_module.load(path)
    assert "input_sise" in str(err.value) and str(path) in str(err.value)


def test_unknown_section_and_bad_values(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[detektor]\n")
    with pytest.raises(ConfigError, match="detektor"):
        config_module.load(path)
    with pytest.raises(ConfigError, match="input_size must be one of"):
        config_module.from_dict({"detector": {"input_size": 300}})
    with pytest.raises(ConfigError, match="must be <= 0.99"):
        config_module.from_dict({"detector": {"score_threshold": 1.5}})
    with pytest.raises(ConfigError, match="must be bool"):
        config_module.from_dict({"embedder": {"flip": "yes"}})


def test_values_are_applied_and_ints_widen_to_float():
    config = config_module.from_dict({"matching": {"distance_threshold": 1}, "detector": {"input_size": 640}})
    assert config.matching.distance_threshold == 1.0 and config.detector.input_size == 640


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[detector\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_module.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        config_module.load(tmp_path / "absent.toml")


@pytest.mark.parametrize("text,expected", [
    ('[door]\nalways_open = "mon-fry 08:00-09:00"\n', "bad days 'mon-fry'"),
    ('[door]\nalways_open = "mon-fri 08:00-25:00"\n', "time '25:00' out of range"),
    ('[mqtt]\nenabled = true\ntls = true\nsigning_key_file = "site.key"\n', "mqtt.ca_file is empty"),
    ('[relay]\nprotocol = "generic"\non_hex = "zz"\noff_hex = "00"\n', "relay.on_hex must be hex"),
    ('[models]\nembedder = "mobilefacenet_128d"\n', "has no calibration"),
])
def test_config_check_and_run_refuse_the_same_mistakes(tmp_path, text, expected):
    from conftest import run_cli

    path = tmp_path / "door.toml"
    path.write_text(text)
    check = run_cli("config", "--check", path)
    run = run_cli("run", "--config", path, "--camera", tmp_path / "none.mp4", "--no-relay")
    for result in (check, run):
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_every_command_has_examples_that_its_parser_accepts():
    import shlex

    from appliance.cli import build_parser
    from appliance.cli.examples import EXAMPLES, commands_of

    parser = build_parser()
    leaves = []

    def walk(node, path):
        subs = list(commands_of(node))
        if not subs:
            leaves.append(path)
        for name, sub in subs:
            walk(sub, (path + " " + name).strip())

    walk(parser, "")
    missing = [path for path in leaves if path not in EXAMPLES and path.split(" ")[0] not in EXAMPLES]
    assert not missing, "commands without examples: %s" % missing
    assert not set(EXAMPLES) - set(leaves) - {"", "people", "gallery"}, "examples for commands that do not exist"
    for path, lines in EXAMPLES.items():
        for line in lines:
            words = shlex.split(line, comments=True)
            words = words[:words.index(">")] if ">" in words else words  # the shell's redirection
            assert words[0] == "facegate" and (not path or " ".join(words[1:]).startswith(path)), line
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                raise AssertionError("the parser refuses its own example: %s" % line) from None
    from conftest import run_cli

    text = run_cli("admin", "history", "--help").stdout
    assert "examples:\n  facegate admin history --door front" in text


def test_a_setting_is_written_through_its_declaration_and_nothing_else_changes(tmp_path):
    text = ("# the front door\n[matching]  # tuned 2026-11\nmin_margin = 0.05\ndistance_threshold = 0.55 # old\n\n"
            "[door]\nunlock_seconds = 2.0\n[enrolment.quality]\nmax_yaw = 0.25")  # no final newline
    path = tmp_path / "door.toml"
    path.write_text(text)
    updated = config_module.set_in_file(path, "matching.distance_threshold", 0.4123)
    assert "# the front door\n[matching]  # tuned 2026-11\nmin_margin = 0.05\ndistance_threshold = 0.4123\n" in updated
    path.write_text(updated)
    loaded = config_module.load(path)
    assert loaded.matching.distance_threshold == 0.4123 and loaded.enrolment.quality.max_yaw == 0.25
    # a section or key the file lacks is added; a nested one too
    assert config_module.set_in_file(path, "mqtt.keepalive", 20).endswith("[mqtt]\nkeepalive = 20\n")
    assert "max_pitch = 0.3\n" in config_module.set_in_file(path, "enrolment.quality.max_pitch", 0.3)
    for name, value, message in (("matching.distance_treshold", 0.4, "no setting matching.distance_treshold"),
                                 ("matching.distance_threshold", 3.0, "must be <= 2"),
                                 ("matching.distance_threshold", "0.4", "must be float")):
        with pytest.raises(ConfigError, match=message):
            config_module.set_in_file(path, name, value)


def test_enrolment_limits_are_a_quality_table_and_the_old_place_says_where_they_went():
    config = config_module.from_dict({"enrolment": {"quality": {"min_interocular": 50}}})
    assert config.enrolment.quality.min_interocular == 50.0 and config.enrolment.quality.max_yaw == 0.3
    assert config.quality.min_interocular == 24.0  # the door's own gate is another table
    with pytest.raises(ConfigError, match=r"moved to \[enrolment.quality\]"):
        config_module.from_dict({"enrolment": {"min_interocular": 50}})


def test_command_line_options_override_the_same_settings_in_every_command():
    from appliance.cli import build_parser
    from appliance.cli.common import load_config

    parser = build_parser()
    for argv in (["run", "--gallery", "g.db", "--audit", "a.db", "--relay-port", "/dev/ttyX", "--camera", "v.mp4"],
                 ["relay", "test", "--port", "/dev/ttyX"], ["relay", "lock", "--relay-port", "/dev/ttyX"],
                 ["tune", "capture", "Ada", "--gallery", "g.db", "--audit", "a.db", "--camera", "v.mp4"],
                 ["audit", "--audit", "a.db"], ["people", "list", "--gallery", "g.db", "--backend", "opencv"],
                 ["identify", "x.jpg", "--models-dir", "/m", "--gallery", "g.db"]):
        args = parser.parse_args(argv)
        config = load_config(args)
        for option, name in config_module.FLAGS.items():
            given = getattr(args, option, None)
            section, _, key = name.partition(".")
            if given:
                assert getattr(getattr(config, section), key) == given, (argv, option)
            else:
                assert getattr(getattr(config, section), key) == getattr(getattr(config_module.Config(), section), key)


def test_config_check_refuses_an_old_shared_site_key_and_keys_init_replaces_it(tmp_path):
    """Moving a door to its own key: the old shared HMAC key (which signs for every door) is
    refused with the way forward, and `facegate keys init` replaces it in place."""
    import os

    from conftest import run_cli

    old = tmp_path / "site.key"
    old.write_text(os.urandom(32).hex() + "\n")
    old.chmod(0o600)
    trusted = tmp_path / "trusted.keys"
    trusted.write_text("admin admin %s\n" % ("ab" * 32))
    path = tmp_path / "door.toml"
    path.write_text('[mqtt]\nenabled = true\ntls = false\ndevice = "front"\nsigning_key_file = "%s"\n'
                    'trusted_keys_file = "%s"\n' % (old, trusted))
    check = run_cli("config", "--check", path)
    assert check.returncode == 2 and "old shared site key" in check.stderr and "keys init" in check.stderr
    made = run_cli("keys", "init", "--config", path)
    assert made.returncode == 0 and "replaced the old shared site key" in made.stdout, made.stderr
    line = made.stdout.strip().splitlines()[-1].split()
    assert line[:2] == ["door", "front"] and len(line[2]) == 64
    assert old.read_text().startswith("-----BEGIN PRIVATE KEY-----") and oct(old.stat().st_mode)[-3:] == "600"
    again = run_cli("keys", "init", "--config", path)
    assert again.returncode == 0 and "nothing changed" in again.stdout and line[2] in again.stdout
    assert run_cli("config", "--check", path).returncode == 0
    trusted.write_text("door other %s\n" % ("cd" * 32))  # no administrator: nothing could be accepted
    refused = run_cli("config", "--check", path)
    assert refused.returncode == 2 and "names no administrator key" in refused.stderr


def test_config_check_shows_every_mistake_at_once_and_a_missing_camera_file(tmp_path):
    from conftest import run_cli

    path = tmp_path / "door.toml"
    path.write_text('[door]\nunlock_secs = 3\nunlock_seconds = "x"\n[camera]\nsource = "%s"\n'
                    % (tmp_path / "entrance.mp4"))
    check = run_cli("config", "--check", path)
    assert check.returncode == 2 and "2 problems" in check.stderr
    assert "unknown key 'unlock_secs'" in check.stderr and "door.unlock_seconds must be float" in check.stderr
    path.write_text('[camera]\nsource = "%s"\n' % (tmp_path / "entrance.mp4"))
    missing = run_cli("config", "--check", path)
    assert missing.returncode == 2 and "camera.source %s does not exist" % (tmp_path / "entrance.mp4") in missing.stderr


def test_an_unknown_model_is_said_once(tmp_path):
    from conftest import run_cli

    path = tmp_path / "door.toml"
    path.write_text('[models]\nembedder = "nope"\n')
    check = run_cli("config", "--check", path)
    assert check.returncode == 2 and check.stderr.count("'nope'") == 1, check.stderr


def test_selftest_and_config_check_agree_on_what_mqtt_needs(tmp_path):
    from conftest import run_cli

    path = tmp_path / "door.toml"
    path.write_text('[mqtt]\nenabled = true\ntls = true\nca_file = "%s"\nsigning_key_file = "%s"\n'
                    'trusted_keys_file = "%s"\npassword_file = "%s"\n'
                    % tuple(tmp_path / name for name in ("ca.crt", "door.key", "trusted.keys", "mqtt.password")))
    check = run_cli("config", "--check", path)
    selftest = run_cli("selftest", "--config", path, "--no-relay", "--no-camera")
    assert check.returncode == 2 and selftest.returncode == 1
    for name in ("ca_file", "signing_key_file", "trusted_keys_file", "password_file"):
        assert "mqtt.%s" % name in check.stderr and "mqtt.%s" % name in selftest.stdout, name
    assert "mqtt            FAIL" in selftest.stdout
