"""/api/providers/{id}/events and /api/events: changes of providers' health, within the caller's providers."""

from __future__ import annotations

from handlers.base import BaseHandler
from registry.access import READ_PROVIDERS
from registry.schemas import MAX_ID


class ProviderEventsHandler(BaseHandler):
    permissions = {"GET": READ_PROVIDERS}

    def get(self, provider_id: str) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        events = self.settings["events"].provider_events(self.may_see(int(provider_id)), limit)
        self.write_json({"events": events})


class EventFeedHandler(BaseHandler):
    """A feed to poll: the events after `after`, oldest first; the answer's `next_after` is where
    the next poll starts."""

    permissions = {"GET": READ_PROVIDERS}

    def get(self) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        after = self.query_int("after", 0, MAX_ID) or 0
        self.write_json(self.settings["events"].feed(after, limit, self.actor.providers))


default_handlers = [
    (r"/api/providers/(?P<provider_id>[0-9]{1,18})/events", ProviderEventsHandler),
    (r"/api/events", EventFeedHandler),
]
