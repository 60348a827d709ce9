"""The Beam options a job on the FlinkRunner gets without flags: the local cluster's, or defaults for another.

``kapparec infra up --with-flink`` records its cluster's REST port, worker pool and job-server
jar (``infra.flink.local_endpoints``); a job without ``--flink-master`` runs there. With
``--flink-master`` it runs on that cluster, whose TaskManager hosts each run a worker pool on
``REMOTE_WORKER_POOL`` (docs/flink.md). Either way the job server is the cached jar, and any
of these options given on the command line wins.
"""

from __future__ import annotations

from infra.flink import local_endpoints
from infra.jobserver import ensure_jar
from kapparec import settings
from kapparec.errors import UsageError
from transforms.job_control import unique_job_name

REMOTE_WORKER_POOL = "localhost:50000"
# The continuous job commits once per bundle, so the bundle's time bounds freshness (Flink's
# default is 1 s). Its Impulse source shuts down once it has emitted: a job whose read has ended
# (a stop, a published version) then finishes, which is how the command learns the read ended.
STREAMING_DEFAULTS = {"--max_bundle_time_mills": "200", "--shutdown_sources_after_idle_ms": "0"}
# Once that source has finished, no Flink checkpoint of the job completes (the stage that reads
# and commits never acknowledges one); kept running, the source lets checkpoints complete but the
# job no longer finishes when its read ends. So the continuous job refuses checkpointing rather
# than run with checkpoints that never complete: exactly-once rests on the offsets each commit
# moves with its features, and the command resubmits a failed job from them (docs/flink.md).
CHECKPOINTING = "--checkpointing_interval"


def has_flag(args: list[str] | tuple[str, ...], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def flag_value(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value of ``flag`` given as ``--flag=V`` or ``--flag V``; None when absent."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def flink_args(args: list[str], flink_master: str | None, jar: str | None, follow: bool) -> list[str]:
    """What to add to ``args`` for the FlinkRunner: master, job-server jar, SDK worker environment, a
    unique job name (how the job is found on the cluster to cancel it) and, for the continuous job,
    its streaming settings."""
    if follow and has_flag(args, CHECKPOINTING):
        raise UsageError(f"the continuous job runs without Flink checkpoints ({CHECKPOINTING}): its exactly-once "
                         f"rests on the offsets committed with its features (docs/flink.md)")
    if has_flag(args, "--job_endpoint"):
        return []  # a job service of the caller's own: it owns all of that
    added = [] if has_flag(args, "--job_name") else ["--job_name", unique_job_name("stream" if follow else "backfill")]
    if follow:
        added += [f"{flag}={value}" for flag, value in STREAMING_DEFAULTS.items() if not has_flag(args, flag)]
    pool = REMOTE_WORKER_POOL
    if flink_master is None:
        local = local_endpoints(settings.run_dir())
        if local is None:
            raise UsageError(f"no local Flink cluster in {settings.run_dir()}: run `kapparec infra up --with-flink`, "
                             f"or give --flink-master HOST:PORT")
        added += ["--flink_master", f"localhost:{local['rest_port']}"]
        pool = f"localhost:{local['worker_pool_port']}"
        # One TaskManager: as many SDK worker processes as subtasks, or a second subtask shares the
        # first one's Python process (and its GIL) and parallelism buys nothing.
        parallelism = flag_value(args, "--parallelism")
        if parallelism and not has_flag(args, "--sdk_worker_parallelism"):
            added += ["--sdk_worker_parallelism", parallelism]
    else:
        added += ["--flink_master", flink_master]
    if not has_flag(args, "--flink_job_server_jar"):
        added += ["--flink_job_server_jar", jar or str(ensure_jar())]
    if not has_flag(args, "--environment_type"):
        added += ["--environment_type", "EXTERNAL", "--environment_config", pool]
    return added
