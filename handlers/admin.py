"""/api/admin: export the backup document, restore from it (or preview the restore)."""

from __future__ import annotations

from handlers.base import BaseHandler
from registry.access import MANAGE_BACKUP
from registry.memory import release_freed_memory


class WholeInventoryHandler(BaseHandler):
    """Export and restore hold every provider in memory at once; afterwards, that memory goes back."""

    def on_finish(self) -> None:
        super().on_finish()
        if self.get_status() == 200:  # only an answer that held the inventory; not a refusal
            release_freed_memory()


class ExportHandler(WholeInventoryHandler):
    permissions = {"GET": MANAGE_BACKUP}

    def get(self) -> None:
        self.write_json_text(self.inventory.export_json(self.actor))


class RestoreHandler(WholeInventoryHandler):
    """An empty body restores from the configured backup file; a backup document as the body
    restores from it. `?dry_run=true` reports what would change and changes nothing."""

    permissions = {"POST": MANAGE_BACKUP}

    async def post(self) -> None:
        dry_run = self.query_bool("dry_run") or False
        raw = self.raw_body()
        if dry_run:
            self.write_json((await self.inventory.preview_restore_from(raw)).as_dict())
        else:
            self.write_json({"restored": await self.inventory.restore_from(raw, self.actor)})


default_handlers = [
    (r"/api/admin/providers/export", ExportHandler),
    (r"/api/admin/providers/restore", RestoreHandler),
]
