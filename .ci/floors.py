"""The declared floor of every direct dependency, as pip constraints (``name==minimum``), or a check of an environment.

    python .ci/floors.py > floors.txt          # constraints: every ``>=X`` in pyproject.toml's dependencies and the
                                               # extras given by --extras (default: test,tune) becomes ``==X``
    python .ci/floors.py --check               # exit 1 unless the running environment holds exactly those versions

torch is left out (``.ci/run`` installs the local 2.13.0 CPU wheel in every environment; other torch builds are
multi-GB downloads), so its declared floor is the one requirement that CI does not install.  Requirements without a
``>=`` lower bound (``==`` pins, bare names) are not constrained here: pip resolves them as usual.
"""

import argparse
import importlib.metadata
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_INSTALLED_AT_FLOOR = {"torch"}


def floors(extras):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    result = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        name, spec = match.group(1).lower(), match.group(2)
        lower = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
        if lower and name not in NOT_INSTALLED_AT_FLOOR:
            result[name] = lower.group(1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="test,tune")
    parser.add_argument("--check", action="store_true", help="check the running environment instead of printing")
    args = parser.parse_args()
    wanted = floors([e for e in args.extras.split(",") if e])
    if not args.check:
        print("\n".join(f"{name}=={version}" for name, version in sorted(wanted.items())))
        return 0
    from packaging.version import Version  # only here: printing runs before anything but pip is installed

    wrong = []
    for name, version in sorted(wanted.items()):
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found = "not installed"
        same = found != "not installed" and Version(found) == Version(version)
        print(f"{'ok' if same else 'WRONG':5} {name}: floor {version}, installed {found}")
        if not same:
            wrong.append(name)
    if wrong:
        print(f"not at the declared floor: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
