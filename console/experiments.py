"""The experiments panel: the report of ``kapparec experiments report`` and its CTR-per-day chart,
from the same functions."""

from __future__ import annotations

import io

from console.clients import Clients
from serving import experiment_report

WINDOW_MINUTES = 30


def report(clients: Clients, min_impressions: int) -> dict:
    return experiment_report.report_from_store(clients.config.redis_url, None, clients.config.experiments_file,
                                               WINDOW_MINUTES, min_impressions)


def ctr_chart_png(report: dict) -> bytes:
    png = io.BytesIO()
    experiment_report.plot(report, png)
    return png.getvalue()
