"""Options and helpers shared by the command modules."""

import argparse
from dataclasses import replace

from appliance import config as config_module
from appliance.config import Config


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--backend", help="inference backend, overriding the config")
    parser.add_argument("--models-dir", help="installed models directory, overriding the config")


def load_config(args: argparse.Namespace) -> Config:
    config = config_module.load(args.config)
    overrides = {}
    if getattr(args, "backend", None):
        overrides["backend"] = args.backend
    if getattr(args, "models_dir", None):
        overrides["dir"] = args.models_dir
    if overrides:
        config = config_module.from_dict({"models": overrides}, "command line", config)
    return config


def with_section(config: Config, section: str, **values) -> Config:
    return replace(config, **{section: replace(getattr(config, section), **values)})
