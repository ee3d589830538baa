"""The admin page: one HTML page (a Tornado template) and its static CSS and JavaScript modules,
which use only the public JSON API. Served with a strict Content-Security-Policy: no inline
script, nothing but this origin."""

from __future__ import annotations

from pathlib import Path

from handlers.base import BaseHandler, GuardedStaticFileHandler
from registry.access import ROLES
from registry.audit import AUDIT_ACTIONS
from registry.events import EVENT_TYPES
from registry.provider_types import PROVIDER_TYPES

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def set_page_security_headers(handler) -> None:
    handler.set_header("Content-Security-Policy", PAGE_CSP)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("Referrer-Policy", "no-referrer")


class RootHandler(BaseHandler):
    def get(self) -> None:
        self.redirect("/ui/")


class AdminPageHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        set_page_security_headers(self)
        self.render("index.html", provider_types=PROVIDER_TYPES.values(), roles=ROLES, audit_actions=AUDIT_ACTIONS,
                    event_types=EVENT_TYPES)


class UiStaticFileHandler(GuardedStaticFileHandler):
    """The page's CSS and JavaScript; versioned URLs (?v=hash) are cached for long by Tornado."""

    def set_default_headers(self) -> None:
        set_page_security_headers(self)


# Application settings that make static_url() in the template and /ui/static/ work.
ui_settings = {
    "template_path": str(UI_DIR),
    "static_path": str(UI_DIR / "static"),
    "static_url_prefix": "/ui/static/",
    "static_handler_class": UiStaticFileHandler,
}

default_handlers = [
    (r"/", RootHandler),
    (r"/ui/?", AdminPageHandler),
]
