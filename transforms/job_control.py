"""Leaving no job behind on a Flink cluster: a submitted pipeline ends with the command that submitted it.

On the local runner the pipeline lives inside the command, so it ends with it. On Flink it lives
in the cluster, and cancelling Beam's job-server invocation does not cancel the Flink job (seen
here: Beam reported CANCELLED while Flink kept it RUNNING). So the job is given a unique name,
found by it in Flink's REST API and cancelled there: when the command leaves by an exception,
and when a stopped ``kapparec stream`` has not ended at a commit boundary within
``STOP_GRACE_S`` (its source sees the stop key at its next resume). And a continuous job that
failed on the cluster is not left failed either: ``RestartBudget`` says when the command submits
it again.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
import uuid

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from infra.health import flink_jobs
from kapparec.errors import KapparecError
from kapparec.threads import Beside

log = logging.getLogger(__name__)

# The source sees the stop key at its next resume, and the bundle then commits: seconds. Past
# this the job is taken as stuck and cancelled (its last bundle is not committed, so nothing is lost).
STOP_GRACE_S = 60.0
CANCEL_TIMEOUT_S = 60.0
TERMINAL_STATES = {"FINISHED", "CANCELED", "FAILED"}


def unique_job_name(kind: str) -> str:
    return f"kapparec-{kind}-{uuid.uuid4().hex[:12]}"


class FlinkJob:
    """A job on a Flink cluster, known by its unique name (``--job_name``) in the REST API at ``master``."""

    def __init__(self, master: str, name: str):
        self.master = master.removeprefix("http://").rstrip("/")
        self.name = name

    @classmethod
    def of(cls, options: PipelineOptions) -> "FlinkJob | None":
        """The job these FlinkRunner options submit; None for another runner or a master without REST."""
        settings = options.get_all_options()
        master, name = settings.get("flink_master"), options.view_as(GoogleCloudOptions).job_name
        if settings.get("runner") != "FlinkRunner" or not master or master.startswith("[") or not name:
            return None
        return cls(master, name)

    def live(self) -> list[str]:
        """Ids of this job's runs that have not reached a terminal state."""
        jobs = flink_jobs(self.master) or []
        return [job["jid"] for job in jobs if job["name"] == self.name and job["state"] not in TERMINAL_STATES]

    def cancel(self) -> None:
        """Cancel every live run of this job and wait until Flink has none left."""
        deadline = time.monotonic() + CANCEL_TIMEOUT_S
        while live := self.live():
            if time.monotonic() > deadline:
                raise KapparecError(f"Flink at {self.master} did not cancel job {self.name} ({live})")
            for jid in live:
                log.warning("cancelling Flink job %s (%s)", jid, self.name)
                self._patch(f"/jobs/{jid}?mode=cancel")
            time.sleep(0.5)

    def _patch(self, path: str) -> None:
        request = urllib.request.Request(f"http://{self.master}{path}", method="PATCH")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except (urllib.error.URLError, OSError) as error:
            log.warning("Flink at %s refused %s: %s", self.master, path, error)


class FlinkJobFailed(KapparecError):
    """The job failed on the cluster (a TaskManager or an SDK worker lost, or a bundle that raised)."""


class RestartBudget:
    """Whether a continuous job that failed on Flink is submitted again: Flink's failure-rate restart
    strategy, kept by the command because its resubmission starts from the committed offsets.

    Flink's own restarts do not: without checkpoints Flink replays the job from the offsets it was
    submitted with (all of a long-running job's log, each record skipped again below its committed
    offset); with them it restores the read's residuals, whose state grows without bound on the
    Beam runners Maven Central serves (beam#27648, docs/flink.md). A job that fails
    ``max_failures`` times within ``window_s`` is failing for a reason a resubmission does not
    cure (a bug, a lost lease), and the failure stands.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 600.0, delay_s: float = 5.0):
        self.max_failures, self.window_s, self.delay_s = max_failures, window_s, delay_s
        self._failures: list[float] = []

    def allows(self, failure: FlinkJobFailed) -> bool:
        """Records ``failure``; True (after the restart delay) when the job may be submitted again."""
        now = time.monotonic()
        self._failures = [at for at in self._failures if now - at < self.window_s] + [now]
        if len(self._failures) > self.max_failures:
            return False
        log.warning("event=flink_job_failed failures_in_window=%d resubmit_in_s=%g error=%s",
                    len(self._failures), self.delay_s, str(failure).splitlines()[0][:500])
        time.sleep(self.delay_s)
        return True


class CancelAfterStop(Beside):
    """Cancels ``job`` when it outlives a stop request by ``grace_s``: a stuck job must not stay."""

    def __init__(self, job: FlinkJob, stop_requested: threading.Event, grace_s: float = STOP_GRACE_S):
        super().__init__(name="cancel-after-stop")
        self._job, self._stop_requested, self._grace_s = job, stop_requested, grace_s

    def run(self) -> None:
        while not self._done.is_set() and not self._stop_requested.wait(0.5):
            pass
        if not self._done.is_set() and not self._done.wait(self._grace_s):
            self._job.cancel()
