"""/metrics: the Prometheus text exposition of registry/metrics.py, and the HTTP request families,
recorded once per answered request (`RequestMetrics`, called from the handlers' `on_finish`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from tornado.web import Application, RequestHandler

from handlers.base import ApiError, BaseHandler
from registry.access import READ_METRICS
from registry.metrics import CONTENT_TYPE

# Any other method is counted as "other": a label value a client cannot multiply.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route of every path no route matches (the JSON 404)
# Reads are answered in well under a millisecond, probes take up to the request timeout.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_label(pattern: str) -> str:
    """A route's pattern as its label, as the OpenAPI document names paths:
    `/api/providers/(?P<provider_id>[0-9]{1,18})$` -> `/api/providers/{provider_id}`, `/docs/?` -> `/docs`,
    `/ui/static/(.*)` -> `/ui/static/{path}`, `/(favicon\\.ico)` -> `/favicon.ico`."""
    label = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.removesuffix("$"))
    label = re.sub(r"\(((?:\w|\\.)+)\)", r"\1", label)  # a group that matches one literal name
    label = re.sub(r"\([^)]*\)", "{path}", label)  # any other group: the rest of a static file's path
    label = re.sub(r"\\(.)", r"\1", label).removesuffix("/?")
    return label or "/"


class RequestMetrics:
    """`registry_http_requests_total{method,route,code}` and `registry_http_request_duration_seconds{route}`.

    Each handler class's route is found once (Tornado's static file handler serves three routes: its
    requests are matched against them), and each (method, route, status) gets its two recorders
    looked up once and kept: `.labels()` on every request would cost the fastest GET measurable
    throughput (bench/metrics_ab.py).
    """

    def __init__(self, registry: CollectorRegistry):
        self._requests = Counter("registry_http_requests", "HTTP requests answered, by method, route and status code.",
                                 ("method", "route", "code"), registry=registry)
        self._durations = Histogram("registry_http_request_duration_seconds",
                                    "HTTP requests by route, by the time from their arrival to their answer.",
                                    ("route",), registry=registry, buckets=REQUEST_BUCKETS)
        self._recorders: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}
        # A handler class's route label, or its routes' (regex, label) when it serves several.
        self._routes: dict[type, str | list[tuple[re.Pattern, str]]] = {}

    def __call__(self, handler: RequestHandler) -> None:
        request = handler.request
        route = self._routes.get(type(handler)) or self._find_routes(type(handler), handler.application)
        if not isinstance(route, str):
            route = next((label for regex, label in route if regex.match(request.path)), UNMATCHED)
        method = request.method if request.method in KNOWN_METHODS else "other"
        key = (method, route, handler.get_status())
        recorders = self._recorders.get(key)
        if recorders is None:
            recorders = self._recorders[key] = (self._requests.labels(method, route, str(key[2])).inc,
                                                self._durations.labels(route).observe)
        count, observe = recorders
        count()
        observe(request.request_time())

    def _find_routes(self, handler_class: type, application: Application) -> str | list[tuple[re.Pattern, str]]:
        """The routes `handler_class` serves, from the Application's rules ("unmatched": the catch-all)."""
        routes = [(rule.matcher.regex, route_label(rule.matcher.regex.pattern))
                  for rule in application.wildcard_router.rules
                  if rule.target is handler_class and hasattr(rule.matcher, "regex")]
        found = UNMATCHED if not routes else routes[0][1] if len(routes) == 1 else routes
        self._routes[handler_class] = found
        return found


class MetricsHandler(BaseHandler):
    permissions = {"GET": READ_METRICS}

    def get(self) -> None:
        metrics = self.settings.get("metrics")
        if metrics is None:  # BACKEND_METRICS=off: as if there were no such route
            raise ApiError(404, f"No such path: {self.request.path}")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(metrics.render(self.actor.providers))


default_handlers = [(r"/metrics", MetricsHandler)]
