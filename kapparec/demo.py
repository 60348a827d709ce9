"""``kapparec demo``: the whole loop on the local stack, as a new user first runs it.

The steps are the verbs a user types, each run as its own ``kapparec`` process (so a step's
failure is that verb's one line, and TensorFlow never shares a process with gRPC's tools):
stack up, a log, a backfill, a two-tower trained from a replay and promoted through the gate,
then ``stream``, ``serve`` and ``console`` left running as the stack's own processes
(``infra/apps.py``: ``kapparec infra down`` stops them). What the demo then shows happens over
gRPC, as a client sees it: explained pages, live events changing a page and the regional
trending list, and a simulated A/B experiment read back from the log.

A second run finds the log, the stream job and the server running and reuses them; the users
and the experiment it creates carry the run's id, so what it reports is its own events only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kapparec import cliargs, settings
from kapparec.errors import KapparecError

DEMO_LOG = {"users": 2000, "items": 600, "events": 60_000, "seed": 0, "malformed_share": 0.005}
KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
LIVE_USER_PREFIX = "live-"  # the users the demo invents, kept out of the heavy/light choice
PAGE_SIZE = 5
TRENDING_SIZE = 20
CHANGE_TIMEOUT_S = 90.0
# One trial of the small grid (its default configuration, the search's first seeded trial) keeps
# the demo within its ten minutes on a loaded 2-core machine; `kapparec train` runs the whole search.
SEARCH_TRIALS = 1
STREAM_CATCH_UP_S = 300.0  # what was logged since the features were built, on a busy 2-core machine


def register(verbs) -> None:
    demo = verbs.add_parser("demo", help="run the whole loop end to end on the local stack (left running)",
                            description="Stack up, a log, backfill, train and promote, stream and serve, "
                                        "explained pages, a live change and an A/B experiment.")
    demo.add_argument("--movielens", type=Path, metavar="PATH", help="import this MovieLens folder instead of a synthetic log")
    for name in ("users", "items", "events"):
        demo.add_argument(f"--{name}", type=cliargs.positive_int, default=DEMO_LOG[name],
                          help=f"the synthetic log's {name} (default {DEMO_LOG[name]:,})")
    demo.add_argument("--start-ms", type=cliargs.non_negative_int, metavar="MS",
                      help="pin the synthetic log's start (epoch ms) for a reproducible log; default: the log ends now")
    demo.add_argument("--epochs", type=cliargs.positive_int, default=3, help="two-tower epochs (default 3)")
    demo.add_argument("--skip-training", action="store_true", help="serve without a personal model (no train step)")
    demo.add_argument("--live-users", type=cliargs.positive_int, default=8,
                      help="users who send the live events (trending counts distinct users; default 8)")
    demo.add_argument("--experiment-seconds", type=cliargs.positive_float, default=60.0, metavar="S",
                      help="how long simulated users take part in the A/B experiment (default 60)")
    demo.add_argument("--once", action="store_true", help="stop everything (processes and stack) at the end")
    demo.set_defaults(run=run_demo)


@dataclass(frozen=True)
class Step:
    title: str
    hint: str  # what to do when it fails
    run: Callable[[], None]


class Demo:
    def __init__(self, args: argparse.Namespace):
        from rich.console import Console

        from infra.apps import DemoApps

        self.args = args
        self.run_id = time.strftime("%H%M%S")
        self.console = Console(highlight=False, soft_wrap=True)  # long lines stay whole in a log
        self.run_dir = settings.run_dir()
        self.apps = DemoApps(self.run_dir)
        self.experiments_file = self.run_dir / "demo" / "experiments.toml"
        self.bootstrap = self.redis_url = ""
        self.ports = None
        self.users: dict[str, str] = {}  # role -> user id

    # -- the steps ------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        logs = f"{self.run_dir / 'logs'}"
        steps = [
            Step("bring the local stack up", f"see `kapparec infra status` and {logs}", self.stack_up),
            Step("fill the log", "check the log with `kapparec infra status`; `--movielens` needs an ml-latest-small folder",
                 self.fill_log),
            Step("compute every feature by replaying the log", "run `kapparec backfill` alone to see its error", self.backfill),
        ]
        if not self.args.skip_training:
            steps.append(Step("train from a replay, build the index, promote through the gate",
                              "run `kapparec train --search-space small` alone; `--skip-training` serves without it",
                              self.train))
        steps += [
            Step("start the stream job, the server and the console", f"see their logs in {logs}", self.start_apps),
            Step("explained recommendations for a heavy, a light and a brand-new user",
                 f"see {logs}/serve.log", self.explained_pages),
            Step("live events through LogEvents", f"is the stream job following? see {logs}/stream.log", self.live_change),
        ]
        if not self.args.movielens:
            steps.append(Step("a simulated A/B experiment and its report",
                              f"see {logs}/serve.log; `kapparec experiments list` shows the file", self.experiment))
        return steps

    def stack_up(self) -> None:
        from infra.stack import LocalStack

        self.verb("infra", "up")
        ports = LocalStack.recorded(self.run_dir)["ports"]  # what `infra up` started, or found running
        self.bootstrap, self.redis_url = f"127.0.0.1:{ports['broker']}", f"redis://127.0.0.1:{ports['redis']}/0"

    def fill_log(self) -> None:
        from streams import offsets, topics

        if sum(offsets.end_offsets(self.bootstrap, topics.EVENTS).values()):
            self.note("the log already holds events: reusing it (`kapparec infra down && kapparec infra wipe` empties it)")
        elif self.args.movielens:
            self.verb("import", "movielens", str(self.args.movielens), "--bootstrap", self.bootstrap)
        else:
            start = ["--start-ms", str(self.args.start_ms)] if self.args.start_ms is not None else []
            self.verb("produce", "synthetic", *self.synthetic_shape("--"), "--events", str(self.args.events), "--malformed-share",
                      str(DEMO_LOG["malformed_share"]), *start, "--bootstrap", self.bootstrap)

    def backfill(self) -> None:
        if "stream" in self.apps.running():
            self.note("the demo's stream job is running and keeps the features fresh: no backfill needed")
            return
        self.verb("backfill", "--no-progress", *self.endpoints())

    def train(self) -> None:
        from modelfiles.registry import ModelRegistry

        production = ModelRegistry(settings.models_dir()).production()
        if production is not None and "serve" in self.apps.running():
            self.note(f"the running server serves model {production.id}: reusing it (`kapparec train` retrains)")
            return
        self.verb("train", "--epochs", str(self.args.epochs), "--search-space", "small",
                  "--search-trials", str(SEARCH_TRIALS), "--bootstrap", self.bootstrap,
                  "--models-dir", str(settings.models_dir()))

    def start_apps(self) -> None:
        from infra.apps import AppSettings

        self.experiments_file.parent.mkdir(parents=True, exist_ok=True)
        self.experiments_file.touch()
        app_settings = AppSettings(self.bootstrap, self.redis_url, settings.models_dir(), self.experiments_file)
        self.ports = self.apps.ports()
        for name, what in (("stream", "starting"), ("serve", "loading the model"), ("console", "starting")):
            with self.console.status(f"{name}: {what}"):
                started = self.apps.start(app_settings, self.ports, name)
            state = "started" if started else "already running, reused"
            self.note(f"{name}: {state}, pid {self.apps.pid(name)} (log {self.run_dir}/logs/{name}.log)")
        with self.console.status("stream: catching up with the log"):
            self.wait_for_stream(STREAM_CATCH_UP_S)

    def explained_pages(self) -> None:
        heavy, light = heavy_and_light_users(self.redis_url)
        self.users = {"heavy": heavy, "light": light, "brand-new": f"{LIVE_USER_PREFIX}{self.run_id}-new"}
        for role, user in self.users.items():
            self.console.print(f"\n[bold]{role} user {user}[/bold]")
            self.verb("recommend", user, "--k", str(PAGE_SIZE), "--server", self.ports.server)

    def live_change(self) -> None:
        from kapparec.live_demo import LiveChange

        change = LiveChange(self.ports.server, self.redis_url, self.users["heavy"],
                            [f"{LIVE_USER_PREFIX}{self.run_id}-{n}" for n in range(self.args.live_users)])
        with self.console.status("waiting for the page and the trending list to change"):
            result = change.run(CHANGE_TIMEOUT_S)
        self.console.print(result.render())

    def experiment(self) -> None:
        from kapparec.live_demo import experiment_report, start_experiment, wait_for_experiment

        name = f"demo_{self.run_id}"
        start_experiment(self.experiments_file, name)
        with self.console.status("waiting for the server to load the experiment"):
            wait_for_experiment(self.ports.server, name)
        self.verb("simulate", "--duration", f"{self.args.experiment_seconds:g}", "--users", "200", "--server",
                  self.ports.server, *self.synthetic_shape("--world-"))
        with self.console.status("waiting for the stream job to commit the simulated events"):
            self.wait_for_stream(STREAM_CATCH_UP_S)
        self.console.print(experiment_report(self.redis_url, self.experiments_file, name))

    # -- helpers --------------------------------------------------------------------------

    def synthetic_shape(self, prefix: str) -> list[str]:
        """The synthetic log's shape as flags: ``--users ...`` for ``produce``, ``--world-users ...`` for ``simulate``."""
        shape = {"users": self.args.users, "items": self.args.items, "seed": DEMO_LOG["seed"]}
        return [arg for name, value in shape.items() for arg in (f"{prefix}{name}", str(value))]

    def wait_for_stream(self, timeout_s: float) -> None:
        """Until the demo's stream job has committed everything the log holds now."""
        from infra.apps import stream_following

        deadline = time.monotonic() + timeout_s
        while not stream_following(self.bootstrap, self.redis_url):
            if self.apps.pid("stream") is None:
                raise KapparecError(f"the stream job exited; see {self.run_dir}/logs/stream.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream job did not commit the log's end within {timeout_s:.0f} s")
            time.sleep(0.2)

    def endpoints(self) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--redis", self.redis_url]

    def verb(self, *argv: str) -> None:
        self.console.print(f"[dim]$ kapparec {' '.join(argv)}[/dim]")
        code = subprocess.run([KAPPAREC, *argv], stdin=subprocess.DEVNULL).returncode
        if code:
            raise KapparecError(f"`kapparec {' '.join(argv[:2])}` exited with {code} (its message is above)")

    def note(self, text: str) -> None:
        self.console.print(f"[cyan]{text}[/cyan]")

    def finish(self, started: float) -> None:
        self.console.rule(f"done in {time.monotonic() - started:.0f} s")
        if self.args.once:
            self.verb("infra", "down")
            return
        self.console.print(
            f"Left running: the stack, `kapparec stream`, `kapparec serve` on {self.ports.server} "
            f"(metrics {self.ports.metrics_url}) and the console on {self.ports.console_url}\n"
            "Try next:\n"
            f"  open {self.ports.console_url}                 the console: trending live, users, items, experiments\n"
            f"  kapparec recommend {self.users.get('heavy', 'u1')} --server {self.ports.server}\n"
            f"  kapparec recommend --trending --server {self.ports.server}\n"
            f"  kapparec simulate --duration 30 --server {self.ports.server}\n"
            f"  kapparec experiments report --experiments {self.experiments_file}\n"
            "  kapparec models list ; kapparec features versions\n"
            "  kapparec infra down                    stops all of it (the log and the features are kept)")


def run_demo(args: argparse.Namespace) -> int:
    cliargs.require(args.movielens is None or args.movielens.is_dir(), f"--movielens: no folder at {args.movielens}")
    demo = Demo(args)
    steps = demo.steps()
    started = time.monotonic()
    for number, step in enumerate(steps, 1):
        demo.console.rule(f"[bold]step {number}/{len(steps)}: {step.title}[/bold]  ({time.monotonic() - started:.0f} s)")
        try:
            step.run()
        except (KapparecError, TimeoutError, OSError) as exc:
            raise KapparecError(f"demo step {number} ({step.title}) failed: {exc}; {step.hint}") from None
    demo.finish(started)
    return 0


def heavy_and_light_users(redis_url: str) -> tuple[str, str]:
    """The users with the longest and the shortest history in the store (the demo's own excluded)."""
    import redis

    from featurestore import layout
    from featurestore.definitions import Feature

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = layout.version_prefix(client.get(layout.CURRENT)) + Feature.HISTORY + layout.KEY_SEPARATOR
    keys = [key for key in client.scan_iter(match=prefix + "*", count=1000)
            if not key[len(prefix):].startswith(LIVE_USER_PREFIX)]
    if not keys:
        raise KapparecError("the feature store holds no user history")
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.zcard(key)
    # Ties broken by id, so the same store always shows the same users.
    sizes = sorted(zip(pipeline.execute(), keys), key=lambda size_key: (-size_key[0], size_key[1]))
    return sizes[0][1][len(prefix):], sizes[-1][1][len(prefix):]
