"""Java artifacts of the local stack, resolved from Maven Central by Maven itself.

Maven Central is one of the registries a fresh machine reaches, and ``mvn`` verifies what
it downloads, so no install step fetches a jar by URL. A resolved set lands in a cache
directory named after its versions; a marker written last tells a whole set from one that
an interrupted run left half-copied.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kapparec.errors import KapparecError

COMPLETE_MARKER = ".complete"
RESOLVE_TIMEOUT_S = 1800


def mvn(log: Path, *args: str) -> bool:
    """Run ``mvn -B -q args``, its output appended to ``log``; True when it succeeded in time."""
    found = shutil.which("mvn")
    if found is None:
        raise KapparecError("mvn is not installed: run `make install` (it installs maven from Debian's packages)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            done = subprocess.run([found, "-B", "-q", *args], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=RESOLVE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def resolved(dest: Path) -> bool:
    return (dest / COMPLETE_MARKER).exists()


def copy_dependencies(pom: Path, dest: Path) -> bool:
    """Copy every runtime dependency of ``pom`` into ``dest`` unless already there; True when this call did."""
    if resolved(dest):
        return False
    partial = dest.with_name(dest.name + ".partial")
    log = dest.with_name(dest.name + ".mvn.log")
    shutil.rmtree(partial, ignore_errors=True)
    if not mvn(log, "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={partial}"):
        raise KapparecError(f"mvn could not resolve {pom} (is Maven Central reachable?); see {log}")
    (partial / COMPLETE_MARKER).touch()
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return True
