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
RESOLVE_TIMEOUT_S = 900


def resolved(dest: Path) -> bool:
    return (dest / COMPLETE_MARKER).exists()


def copy_dependencies(pom: Path, dest: Path) -> bool:
    """Copy every runtime dependency of ``pom`` into ``dest`` unless already there; True when this call did."""
    if resolved(dest):
        return False
    if shutil.which("mvn") is None:
        raise KapparecError("mvn is not installed: run `make install` (it installs maven from Debian's packages)")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={partial}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KapparecError(f"mvn did not resolve {pom} within {RESOLVE_TIMEOUT_S}s (is Maven Central reachable?)") from None
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise KapparecError(f"mvn could not resolve {pom}: {last[0]}")
    (partial / COMPLETE_MARKER).touch()
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return True
