"""kapparec: a streaming-first (Kappa) recommender.

This file is also Beam's ``--setup_file``: remote workers (Flink task managers) build the
same packages from it, so the pipelines they run import the same code as the driver.
The exact, transitive pins live in requirements.lock; the ranges here are what the code needs.
"""

from setuptools import find_packages, setup

setup(
    name="kapparec",
    version="0.1.0",
    description="Streaming-first (Kappa) recommendation system: Kafka log, Beam features, Redis, TFRS, ScaNN, gRPC",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["kapparec*", "streams*", "transforms*", "featurestore*", "modelfiles*", "training*", "serving*",
                                    "infra*", "console*"]),
    package_data={"infra": ["kafka/*"], "serving": ["protos/*.proto"], "console": ["templates/*.html", "static/*"]},
    install_requires=[
        "apache-beam==2.61.0",
        "kafka-python==3.0.12",
        # The producers compress batches with lz4 (kafka-python needs this module for it).
        "lz4==4.4.5",
        # kafka-python checksums record batches in pure Python unless this C implementation is there.
        "crc32c==2.9.post0",
        "redis==5.3.1",
        # redis-py parses replies in C with it (the request path reads a few hundred values per call).
        "hiredis==3.5.0",
        "pydantic>=2.6,<3",
        # The log's hot-path parser: decodes and validates a record several times faster than pydantic.
        "msgspec==0.23.0",
        # JSON encoding on the feature path (the commit, attribution members).
        "orjson==3.13.0",
        "tqdm>=4.66",
        "numpy==2.1.3",
        "protobuf==5.29.6",
        "grpcio==1.65.5",
    ],
    extras_require={
        # Training and serving; the feature pipelines on a Flink worker do not need them.
        "ml": [
            "tensorflow==2.20.0",
            "tf-keras==2.20.1",
            "tensorflow-recommenders==0.7.7",
            "scann==1.4.2",
            # TensorFlow's own string fingerprint: the numpy user tower hashes unknown ids into the same buckets.
            "pyfarmhash==0.5.1",
            "grpcio-tools==1.65.5",
            "grpcio-health-checking==1.65.5",
            "grpcio-reflection==1.65.5",
            "prometheus_client>=0.20",
            # librdkafka: serving's impressions leave through it, off the GIL (serving/impressions.py).
            "confluent-kafka==2.16.1",
            "cachetools>=5.3",
            "matplotlib>=3.8",
        ],
        # The web console: Flask (with Werkzeug and Jinja2), a WSGI app served in-process, no build step.
        "console": ["flask>=3.1,<3.2"],
        # playwright drives the system's Chromium (Debian's package) in the browser tests; it downloads no browser.
        # The tests read the log with confluent-kafka (from "ml"): a client other than the writers' kafka-python.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "playwright>=1.49"],
    },
    entry_points={"console_scripts": ["kapparec = kapparec.cli:main"]},
)
