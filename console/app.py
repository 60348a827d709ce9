"""The console's web app: routes, parameter checks and error pages.

Every page is rendered on the server; bad ids and query parameters get 400, an item the catalog
does not know gets a 404 page that says so, and a service that does not answer gets a page that
names it (never a stack trace).
"""

from __future__ import annotations

import secrets

import grpc
from flask import Flask, Response, abort, redirect, render_template, request, url_for

from console import experiments, security
from console.clients import Clients, ConsoleConfig
from console.items import item_page
from console.system import ServingWindow, system_panel
from console.trending import trending_lists
from console.users import BUTTON_EVENTS, send_and_wait, user_page
from kapparec.errors import KapparecError
from kapparec.timeunits import utc_text
from serving import limits
from serving.experiment_report import DEFAULT_MIN_IMPRESSIONS


def create_app(config: ConsoleConfig) -> Flask:
    app = Flask(__name__)
    # Sessions only carry the CSRF token: a new secret per process just asks for a reload.
    app.config.update(SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_HTTPONLY=True)
    clients = Clients(config)
    serving = ServingWindow()
    app.jinja_env.filters["utc"] = utc_text
    app.jinja_env.globals.update(csrf_token=security.csrf_token, allow_events=config.allow_events,
                                 button_events=BUTTON_EVENTS, server=config.server)

    @app.get("/")
    def trending():
        _only_params()
        return render_template("trending.html", lists=trending_lists(clients))

    @app.get("/fragments/trending")
    def trending_fragment():
        _only_params()
        return render_template("_trending_lists.html", lists=trending_lists(clients))

    @app.get("/users")
    def find_user():
        _only_params("id")
        user_id = request.args.get("id")
        if user_id is None:
            return render_template("find_user.html")
        return redirect(url_for("user", user_id=limits.identifier("id", user_id)))

    @app.get("/users/<user_id>")
    def user(user_id: str):
        _only_params("event", "item", "delay_ms")
        sent = _sent_event(request.args)
        return render_template("user.html", page=user_page(clients, limits.identifier("user id", user_id)), sent=sent)

    @app.post("/users/<user_id>/events")
    def send_event(user_id: str):
        if not config.allow_events:
            abort(403, description="events are off: start the console with --allow-events to send them")
        security.check_post()
        user_id = limits.identifier("user id", user_id)
        item_id = limits.identifier("item_id", request.form.get("item_id", ""))
        event_type = request.form.get("event_type", "")
        if event_type not in BUTTON_EVENTS:
            abort(400, description=f"event_type must be one of {', '.join(BUTTON_EVENTS)}")
        delay_ms = send_and_wait(clients, user_id, item_id, event_type)
        return redirect(url_for("user", user_id=user_id, event=event_type, item=item_id,
                                delay_ms="none" if delay_ms is None else delay_ms), code=303)

    @app.get("/items/<item_id>")
    def item(item_id: str):
        _only_params()
        item_id = limits.identifier("item id", item_id)
        page = item_page(clients, item_id)
        if page is None:
            return render_template("message.html", title="Unknown item",
                                   message=f"The catalog has no item {item_id!r}."), 404
        return render_template("item.html", page=page)

    @app.get("/system")
    def system():
        _only_params()
        return render_template("system.html", panel=system_panel(clients, serving))

    @app.get("/experiments")
    def experiments_panel():
        min_impressions = _min_impressions()
        return render_template("experiments.html", report=experiments.report(clients, min_impressions),
                               min_impressions=min_impressions)

    @app.get("/experiments/ctr.png")
    def ctr_chart():
        report = experiments.report(clients, _min_impressions())
        return Response(experiments.ctr_chart_png(report), mimetype="image/png")

    _error_pages(app, config)
    return app


def _error_pages(app: Flask, config: ConsoleConfig) -> None:
    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def client_error(error):
        return render_template("message.html", title=error.name, message=error.description), error.code

    @app.errorhandler(limits.InvalidRequest)
    def invalid(error):
        return render_template("message.html", title="Bad request", message=str(error)), 400

    @app.errorhandler(grpc.RpcError)
    def server_unavailable(error: grpc.RpcError):
        message = f"The gRPC server at {config.server} answered {error.code().name}: {error.details()}"
        return render_template("message.html", title="Serving did not answer", message=message), 502

    @app.errorhandler(KapparecError)
    def not_ready(error):
        return render_template("message.html", title="Not ready", message=str(error).splitlines()[0]), 503


def _only_params(*allowed: str) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        abort(400, description=f"unknown query parameter {unknown[0]!r}")


def _sent_event(args) -> dict | None:
    """The event the last button sent, echoed back by its redirect, checked like any input."""
    if "event" not in args:
        return None
    if args["event"] not in BUTTON_EVENTS:
        abort(400, description=f"event must be one of {', '.join(BUTTON_EVENTS)}")
    delay = args.get("delay_ms", "none")
    if delay != "none" and not delay.isdigit():
        abort(400, description="delay_ms must be a whole number of milliseconds")
    return {"event": args["event"], "item": limits.identifier("item", args.get("item", "")),
            "delay_ms": None if delay == "none" else int(delay)}


def _min_impressions() -> int:
    _only_params("min_impressions")
    raw = request.args.get("min_impressions", str(DEFAULT_MIN_IMPRESSIONS))
    if not raw.isdigit() or int(raw) < 1:
        abort(400, description="min_impressions must be a whole number above 0")
    return int(raw)
