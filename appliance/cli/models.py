"""`facegate models`: install models from the mirror, list the manifest."""

from pathlib import Path

from appliance.models import load_manifest
from appliance.models import install as installer


def register(commands) -> None:
    parser = commands.add_parser("models", help="install and list model files")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    install = sub.add_parser("install", help="copy models from the mirror and check their sha256")
    install.add_argument("models", nargs="*", help="model ids (default: all)")
    install.add_argument("--mirror", help="mirror directory (default $%s or %s)"
                         % (installer.MIRROR_ENV, installer.DEFAULT_MIRROR))
    install.add_argument("--dir", help="models directory (default $FACEGATE_MODELS_DIR or ./models)")
    install.set_defaults(handler=run_install)
    listing = sub.add_parser("list", help="the models the manifest names")
    listing.set_defaults(handler=run_list)


def run_install(args) -> int:
    import os

    from appliance.models import DEFAULT_MODELS_DIR, MODELS_DIR_ENV

    ids = args.models or sorted(load_manifest())
    # the install's own default is never the recorded folder: that would only ever point to itself
    target = Path(args.dir or os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)
    for line in installer.install(ids, installer.mirror_dir(args.mirror), target):
        print(line)
    if not args.dir:  # the environment's own models (make models): found from any folder from now on
        installer.record(target)
    return 0


def run_list(args) -> int:
    for model_id, spec in sorted(load_manifest().items()):
        note = "" if spec.commercial_use else "  (no commercial licence: see its licence note)"
        print("%-27s %-9s %s%s" % (model_id, spec.role, spec.file, note))
    return 0
