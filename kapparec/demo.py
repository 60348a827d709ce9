"""``kapparec demo``: the main job end to end on the local stack, as a new user first runs it.

It is the same verbs a user types, run in order: stack up, a synthetic log (once: a second
demo reuses the log already there), a backfill of every feature, a look at the features,
a two-tower retrained from a replay of the log and registered, then the gRPC endpoint serving
it, asked for one user's recommendations.
"""

from __future__ import annotations

from kapparec import settings

DEMO_LOG = {"users": 2000, "items": 600, "events": 60_000, "seed": 0, "malformed_share": 0.005}
SYNTHETIC_LOG = [arg for name, value in DEMO_LOG.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def register(verbs) -> None:
    demo = verbs.add_parser("demo", help="run the main job end to end on the local stack")
    demo.add_argument("--epochs", default="3", help="two-tower epochs for the demo model")
    demo.add_argument("--skip-training", action="store_true", help="stop after the features")
    demo.set_defaults(run=run_demo)


def _step(title: str, argv: list[str]) -> None:
    from kapparec.cli import main
    from kapparec.errors import KapparecError

    print(f"\n== {title}: kapparec {' '.join(argv)}", flush=True)
    code = main(argv)
    if code:
        raise KapparecError(f"demo stopped: `kapparec {' '.join(argv)}` exited with {code}")


def _log_is_empty() -> bool:
    from streams import offsets, topics

    return sum(offsets.end_offsets(settings.bootstrap(), topics.EVENTS).values()) == 0


def _show_features() -> None:
    from featurestore.reader import FeatureReader

    reader = FeatureReader(settings.redis_url())
    print("\n== what the feature store now knows")
    trending = reader.trending(n=5)
    print("trending (global):", ", ".join(f"{item} {score:.1f}" for item, score in trending))
    user = "u1"
    print(f"{user} recently:", ", ".join(f"{e.event_type} {e.item_id}" for e in reader.history(user, 5)))
    affinity = sorted(reader.category_affinity(user).items(), key=lambda kv: -kv[1])[:3]
    print(f"{user} likes:", ", ".join(f"{category} {share:.0%}" for category, share in affinity))
    if trending:
        item = trending[0][0]
        print(f"similar to {item}:", ", ".join(f"{other} {score:.2f}" for other, score in reader.similar(item, 5)))
    print(f"late records counted: {reader.late_records()}")


def _serve_once() -> None:
    """Start `kapparec serve`, ask it for u1's page with `kapparec recommend`, stop it."""
    import subprocess
    import sys
    from pathlib import Path

    from infra.services import free_port
    from kapparec.errors import KapparecError
    from serving.server import wait_until_serving

    port, metrics_port = free_port(), free_port()
    kapparec = str(Path(sys.executable).with_name("kapparec"))
    command = [kapparec, "serve", "--port", str(port), "--metrics-port", str(metrics_port)]
    print(f"\n== serve the production model: kapparec {' '.join(command[1:])}", flush=True)
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        if not wait_until_serving(f"localhost:{port}", lambda: server.poll() is None, timeout_s=180):
            raise KapparecError("demo stopped: `kapparec serve` did not answer within 180 s")
        _step("ask it for recommendations", ["recommend", "u1", "--k", "8", "--server", f"localhost:{port}"])
    finally:
        server.terminate()
        server.wait(30)


def run_demo(args) -> int:
    _step("bring the local stack up", ["infra", "up"])
    if _log_is_empty():
        _step("produce a synthetic log", ["produce", "synthetic", *SYNTHETIC_LOG])
    else:
        print("\n== the log already holds events: reusing it (it outlives `kapparec infra down`; "
              "`kapparec infra down && kapparec infra wipe` deletes it)")
    _step("compute every feature by replaying the log", ["backfill", "--no-progress"])
    _show_features()
    if not args.skip_training:
        _step("retrain the two-tower from a replay of the log",
              ["train", "--epochs", args.epochs, "--search-space", "small"])
        _step("the model registry", ["models", "list"])
        _serve_once()
    print("\ndemo done. Try `kapparec stream` to follow new events, `kapparec features dump | head`, "
          "`kapparec infra down` to stop (the log and the features are kept), `kapparec infra wipe` after it "
          "to start from an empty log.")
    return 0
