"""The blueprint, by job: the pages and JSON API (:mod:`.pages`), recovery codes and a
new number (:mod:`.recovery`), the simulated phone (:mod:`.devphone`) and provider
callbacks (:mod:`.callbacks`).

A view answers JSON when the request prefers it (it sent JSON, or ranks
application/json above text/html) and HTML otherwise.
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ..errors import FlowError, ProviderError
from . import apidoc, callbacks, devphone, pages, recovery
from .common import flow_error, no_store, provider_error, store_error, template_context

__all__ = ["make_blueprint"]


def make_blueprint() -> Blueprint:
    """The extension's blueprint: every route, its error handlers and template context."""
    bp = Blueprint(
        "phoneverify",
        __name__,
        template_folder="../templates",
        static_folder="../static/phoneverify",
        static_url_path="/static",
    )
    bp.add_url_rule("/", "verify", pages.verify, methods=["GET"])
    bp.add_url_rule("/start", "start", pages.start, methods=["POST"])
    bp.add_url_rule("/wait", "wait", pages.wait, methods=["GET"])
    bp.add_url_rule("/status", "status", pages.status, methods=["GET"])
    bp.add_url_rule("/confirm", "confirm", pages.confirm, methods=["POST"])
    bp.add_url_rule("/resend", "resend", pages.resend, methods=["POST"])
    bp.add_url_rule("/cancel", "cancel", pages.cancel, methods=["POST"])
    bp.add_url_rule("/talk", "talk", pages.talk, methods=["POST"])
    bp.add_url_rule("/dev/phone", "dev_phone", devphone.dev_phone, methods=["GET"])
    bp.add_url_rule(
        "/dev/phone/<call_id>/<action>",
        "dev_phone_action",
        devphone.dev_phone_action,
        methods=["POST"],
    )
    bp.add_url_rule(
        "/callback/<provider>/<token>", "callback", callbacks.provider_callback, methods=["POST"]
    )
    bp.add_url_rule("/recovery-codes", "recovery_codes", recovery.codes_page, methods=["GET"])
    bp.add_url_rule("/recovery-codes", "generate_codes", recovery.generate, methods=["POST"])
    bp.add_url_rule("/recover", "recover", recovery.recover_page, methods=["GET"])
    bp.add_url_rule("/recover", "use_code", recovery.recover, methods=["POST"])
    bp.add_url_rule("/new-number", "new_number", recovery.new_number_page, methods=["GET"])
    bp.add_url_rule("/new-number", "start_new_number", recovery.new_number, methods=["POST"])
    bp.add_url_rule("/openapi.json", "openapi", apidoc.openapi_json, methods=["GET"])
    bp.context_processor(template_context)
    bp.context_processor(recovery.template_context)
    bp.after_request(no_store)
    bp.register_error_handler(FlowError, flow_error)
    bp.register_error_handler(ProviderError, provider_error)
    bp.register_error_handler(SQLAlchemyError, store_error)
    bp.register_error_handler(HTTPException, apidoc.http_error)
    return bp
