"""Wheels the package index does not have for a board: a compiled package pinned in
board/<board>/source-wheels.txt (libosdp has no armv7l wheel, so the RV1126 gets it this way),
built here from its pinned source with the host's cross compiler, against the board root's own
Python (a Debian root with libpython3.X-dev, or Buildroot's staging directory).

The package's own setup.py runs under the host's Python, which must be the board's version, told
that it is the board's: the root's sysconfig data (its compiler, flags and extension suffix, with
its include directories moved under the root) and its platform. The wheel that comes out is
checked like a downloaded one (`bundle.check_wheel`), and `make test-emulated` installs and runs
it in the RV1126's armhf root.
"""

import ast
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List

from appliance.errors import FaceGateError

PLATFORMS = {"armhf": "linux-armv7l", "arm64": "linux-aarch64"}  # a board's ARCH -> its platform
INCLUDE_KEYS = ("INCLUDEPY", "CONFINCLUDEPY", "INCLUDEDIR", "CONFINCLUDEDIR")


def _build_time_vars(path: Path) -> Dict[str, object]:
    """The root's `build_time_vars = {...}`, read as a literal: nothing from the root is run here."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["build_time_vars"]:
            return dict(ast.literal_eval(node.value))
    raise FaceGateError("%s holds no build_time_vars: not a Python sysconfig file" % path)


def target_sysconfig(sysroot: Path, python: str, folder: Path) -> str:
    """The board's sysconfig data written into `folder` with its include directories under the
    root; the module's name, for _PYTHON_SYSCONFIGDATA_NAME."""
    sysroot = sysroot.resolve()  # the build runs elsewhere: a relative root would fall back to the host's headers
    found = sorted((sysroot / "usr" / "lib" / ("python" + python)).glob("_sysconfigdata__linux_*.py"))
    if not found:
        raise FaceGateError("no Python %s in %s (expected usr/lib/python%s/_sysconfigdata__linux_*.py): give the "
                            "board's root filesystem" % (python, sysroot, python))
    variables = _build_time_vars(found[0])
    for key in INCLUDE_KEYS:
        if isinstance(variables.get(key), str) and variables[key].startswith("/"):
            variables[key] = str(sysroot) + variables[key]
    # Debian's pyconfig.h includes <arm-linux-gnueabihf/python3.X/pyconfig.h>: the root's include
    # directory, searched after the cross compiler's own C library headers
    variables["CFLAGS"] = "%s -idirafter %s" % (variables.get("CFLAGS", ""), sysroot / "usr" / "include")
    headers = Path(str(variables.get("INCLUDEPY", "")))
    if not (headers / "Python.h").is_file():
        raise FaceGateError("%s has no Python.h: install the board's Python headers into its root "
                            "(Debian: libpython%s-dev)" % (headers, python))
    (folder / found[0].name).write_text("build_time_vars = %r\n" % variables)
    return found[0].stem


def fetch_source(pin: str, folder: Path) -> Path:
    """The pinned source distribution, unpacked; its setup.py's directory."""
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", "download", "--no-deps",
                    "--no-binary=:all:", "--dest", str(folder), pin], check=True)
    archives = sorted(folder.glob("*.tar.gz"))
    if not archives:
        raise FaceGateError("the package index has no source for %s" % pin)
    with tarfile.open(archives[0]) as archive:
        archive.extractall(folder / "source", filter="data")
    setups = sorted((folder / "source").glob("*/setup.py"))
    if not setups:
        raise FaceGateError("%s's source has no setup.py: it cannot be cross-built here" % pin)
    return setups[0].parent


def build_source_wheels(pins: List[str], meta: Dict[str, str], sysroot: Path, out: Path) -> List[Path]:
    """Cross-build each pin for the board `meta` describes, against `sysroot`; the wheels, in `out`."""
    python = meta["PYTHON"]
    host = "%d.%d" % sys.version_info[:2]
    if host != python:
        raise FaceGateError("cross-building %s for Python %s needs the host's Python to be %s too (it is %s)"
                            % (", ".join(pins), python, python, host))
    built = []
    for pin in pins:
        with tempfile.TemporaryDirectory(prefix="facegate-source-wheel-") as temporary:
            folder = Path(temporary)
            source = fetch_source(pin, folder)
            (folder / "sysconfig").mkdir()
            env = dict(os.environ, PYTHONPATH=str(folder / "sysconfig"),
                       _PYTHON_SYSCONFIGDATA_NAME=target_sysconfig(sysroot, python, folder / "sysconfig"),
                       _PYTHON_HOST_PLATFORM=PLATFORMS[meta["ARCH"]])
            before = set(out.glob("*.whl"))
            result = subprocess.run([sys.executable, "setup.py", "--quiet", "bdist_wheel", "--dist-dir", str(out)],
                                    cwd=source, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise FaceGateError("cross-building %s failed (is the cross compiler installed?): %s"
                                    % (pin, (result.stderr.strip().splitlines() or ["no output"])[-1]))
            for wheel in sorted(set(out.glob("*.whl")) - before):
                check_machine_code(wheel, meta["ARCH"])
                built.append(wheel)
    return built


ELF_MACHINES = {"armhf": 40, "arm64": 183}  # e_machine: EM_ARM, EM_AARCH64


def check_machine_code(wheel: Path, arch: str) -> None:
    """Every shared object in `wheel` is the board's machine code (a host compiler that slipped in
    makes an x86 library with the board's name on it)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(".so"):
                header = archive.open(name).read(20)
                machine = int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" else None
                if machine != ELF_MACHINES[arch]:
                    wheel.unlink()
                    raise FaceGateError("%s in %s is not %s machine code (ELF machine %s): the cross compiler was "
                                        "not used" % (name, wheel.name, arch, machine))
