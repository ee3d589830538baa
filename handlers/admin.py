"""/api/admin: export the backup document, restore from it (or preview the restore)."""

from __future__ import annotations

from handlers.base import BaseHandler
from memory import release_freed_memory
from store.backup import parse_document, read_backup_file


class WholeInventoryHandler(BaseHandler):
    """Export and restore hold every provider in memory at once; afterwards, that memory goes back."""

    def on_finish(self) -> None:
        super().on_finish()
        release_freed_memory()


class ExportHandler(WholeInventoryHandler):
    def get(self) -> None:
        self.write_json_text(self.registry.export_json())


class RestoreHandler(WholeInventoryHandler):
    """An empty body restores from the configured backup file; a backup document as the body
    restores from it. `?dry_run=true` reports what would change and changes nothing."""

    def post(self) -> None:
        dry_run = self.query_bool("dry_run") or False
        raw = self.raw_body()
        if raw.strip():
            document = parse_document(raw, source="the request body")
        else:
            document = read_backup_file(self.registry.backup_path)
        if dry_run:
            self.write_json(self.registry.preview_restore(document).as_dict())
        else:
            self.write_json({"restored": self.registry.restore(document)})


default_handlers = [
    (r"/api/admin/providers/export", ExportHandler),
    (r"/api/admin/providers/restore", RestoreHandler),
]
