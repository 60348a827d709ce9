"""Beam's Flink job-server jar, resolved from Maven Central with ``mvn`` once, into a cache.

Beam left alone downloads the jar itself over plain HTTPS from Maven's host, which a machine
may not reach; Maven's own client goes through whatever repository and proxy its settings
name. The jar is first asked for as Beam publishes it, matching the pinned Beam and Flink
(``beam-runners-flink-1.19-job-server:2.61.0``). Where the repository does not serve it (the
Maven Central these machines reach serves no ``job-server`` artifact and no 2.61.0 Flink
runner), it is built by ``infra/flink-job-server/pom.xml``: the Flink runner of the nearest
Beam release served (2.62.0) with its dependencies, shaded into one jar as Beam's own build does.
The jar lives outside the venv (``KAPPAREC_CACHE_DIR``, default ``~/.cache/kapparec``), so a
fresh venv or worktree does not fetch it again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.maven import mvn
from kapparec import settings
from kapparec.errors import KapparecError

FLINK_MINOR = "1.19"
PINNED_BEAM = "2.61.0"
PUBLISHED_ARTIFACT = f"org.apache.beam:beam-runners-flink-{FLINK_MINOR}-job-server:{PINNED_BEAM}"
POM = Path(__file__).with_name("flink-job-server") / "pom.xml"
# What the pom builds (its beam.version): keep in step with the pom.
BUILT_BEAM = "2.62.0"


def cache_dir() -> Path:
    return settings.cache_dir() / "flink"


def published_jar() -> Path:
    return cache_dir() / f"beam-runners-flink-{FLINK_MINOR}-job-server-{PINNED_BEAM}.jar"


def built_jar() -> Path:
    return cache_dir() / f"kapparec-flink-{FLINK_MINOR}-job-server-{BUILT_BEAM}.jar"


def cached_jar() -> Path | None:
    """The job-server jar already in the cache, the published one first; None when there is none."""
    return next((jar for jar in (published_jar(), built_jar()) if jar.is_file()), None)


def ensure_jar() -> Path:
    """The cached jar, resolved first if missing: Beam's published artifact, else the pom's build."""
    jar = cached_jar()
    if jar is not None:
        return jar
    cache_dir().mkdir(parents=True, exist_ok=True)
    log = cache_dir() / "mvn.log"
    if mvn(log, "dependency:copy", f"-Dartifact={PUBLISHED_ARTIFACT}", f"-DoutputDirectory={cache_dir()}"):
        return published_jar()
    build_dir = cache_dir() / "build"
    if not mvn(log, "-f", str(POM), "package", f"-Dbuild.dir={build_dir}"):
        raise KapparecError(f"mvn could not resolve {PUBLISHED_ARTIFACT} nor build the job server from "
                            f"{POM}; see {log}")
    # Moved in whole at the end, so an interrupted build is never taken for a jar.
    (build_dir / built_jar().name).rename(built_jar())
    shutil.rmtree(build_dir, ignore_errors=True)
    return built_jar()
