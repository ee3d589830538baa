"""HTTP only: parse, validate, authorise, call the core (registry/), render. Each module ends with its
routes; `default_handlers` joins them (unmatched paths go to `NotFoundHandler`)."""

from handlers import access, admin, docs, events, health, metrics, provider_routes, ui, webhooks
from handlers.base import AccessLog, NotFoundHandler, RequestsInFlight
from handlers.metrics import RequestMetrics

# Tornado tries the routes in order: the API's come first.
default_handlers = (provider_routes.default_handlers + events.default_handlers + webhooks.default_handlers
                    + access.default_handlers + health.default_handlers + metrics.default_handlers
                    + admin.default_handlers
                    + docs.default_handlers + ui.default_handlers)
ui_settings = ui.ui_settings

__all__ = ["default_handlers", "ui_settings", "AccessLog", "NotFoundHandler", "RequestMetrics", "RequestsInFlight"]
