"""Beam's Flink job-server jar, built by ``mvn`` from Maven Central once, into a cache.

The jar is built by ``infra/flink-job-server/pom.xml``: the Flink runner of Beam 2.62.0 with its
dependencies, shaded into one jar as Beam's own build does, with patched copies of the classes
that leaked an SDF's self-checkpoint residuals into keyed state (beam#27648, apache/beam PR
#39191; see the pom). Beam's published job-server artifact is not asked for: the Maven Central
these machines reach serves none, and any published release up to the fix leaks.

The cached jar's name carries a digest of the pom and the patched sources, so a change to either
builds a new jar on every machine instead of reusing one without it. The jar lives outside the
venv (``KAPPAREC_CACHE_DIR``, default ``~/.cache/kapparec``), so a fresh venv or worktree does not
build it again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from infra.maven import mvn
from kapparec import settings
from kapparec.errors import KapparecError

FLINK_MINOR = "1.19"
PROJECT = Path(__file__).with_name("flink-job-server")
POM = PROJECT / "pom.xml"
# What the pom builds (its beam.version and finalName): keep in step with the pom.
BUILT_BEAM = "2.62.0"
POM_OUTPUT = f"kapparec-flink-{FLINK_MINOR}-job-server-{BUILT_BEAM}.jar"


def cache_dir() -> Path:
    return settings.cache_dir() / "flink"


def sources_digest() -> str:
    """A digest of what the jar is built from: the pom and every source file, with their paths."""
    digest = hashlib.sha256()
    for path in [POM, *sorted(p for p in (PROJECT / "src").rglob("*") if p.is_file())]:
        digest.update(path.relative_to(PROJECT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def built_jar() -> Path:
    return cache_dir() / f"kapparec-flink-{FLINK_MINOR}-job-server-{BUILT_BEAM}-{sources_digest()}.jar"


def ensure_jar() -> Path:
    """The cached jar of the current sources, built first if missing."""
    jar = built_jar()
    if jar.is_file():
        return jar
    cache_dir().mkdir(parents=True, exist_ok=True)
    log = cache_dir() / "mvn.log"
    build_dir = cache_dir() / f"build-{sources_digest()}"
    if not mvn(log, "-f", str(POM), "package", f"-Dbuild.dir={build_dir}"):
        raise KapparecError(f"mvn could not build the Flink job server from {POM}; see {log}")
    # Moved in whole at the end, so an interrupted build is never taken for a jar.
    (build_dir / POM_OUTPUT).rename(jar)
    shutil.rmtree(build_dir, ignore_errors=True)
    return jar
