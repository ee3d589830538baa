"""/api/admin: export the backup document (portable, under a passphrase, with POST), restore from
it (or preview the restore)."""

from __future__ import annotations

from handlers.base import ApiError, BaseHandler
from registry.access import MANAGE_BACKUP
from registry.memory import release_freed_memory
from registry.schemas import portable_export_validator

PASSPHRASE_HEADER = "X-Backup-Passphrase"


class WholeInventoryHandler(BaseHandler):
    """Export and restore hold every provider in memory at once; afterwards, that memory goes back."""

    def on_finish(self) -> None:
        super().on_finish()
        if self.get_status() == 200:  # only an answer that held the inventory; not a refusal
            release_freed_memory()


class ExportHandler(WholeInventoryHandler):
    """GET: the backup document (keys under the server's secret). POST {"passphrase"}: a portable
    export (keys under the passphrase), for a server with another secret."""

    permissions = {"GET": MANAGE_BACKUP, "POST": MANAGE_BACKUP}

    def get(self) -> None:
        self.write_json_text(self.inventory.export_json(self.actor))

    async def post(self) -> None:
        body = await self.json_body(portable_export_validator)
        self.set_header("Cache-Control", "no-store")
        self.write_json_text(await self.inventory.export_portable(body["passphrase"], self.actor))


class RestoreHandler(WholeInventoryHandler):
    """An empty body restores from the configured backup file; a backup document as the body
    restores from it (a portable export with its passphrase in X-Backup-Passphrase).
    `?dry_run=true` reports what would change and changes nothing."""

    permissions = {"POST": MANAGE_BACKUP}

    async def post(self) -> None:
        dry_run = self.query_bool("dry_run") or False
        raw = self.raw_body()
        passphrase = self._passphrase()
        if dry_run:
            self.write_json((await self.inventory.preview_restore_from(raw, passphrase)).as_dict())
        else:
            self.write_json({"restored": await self.inventory.restore_from(raw, self.actor, passphrase)})

    def _passphrase(self) -> str | None:
        """The X-Backup-Passphrase header, as the UTF-8 it was sent in (Tornado hands headers over as Latin-1)."""
        value = self.request.headers.get(PASSPHRASE_HEADER)
        if value is None:
            return None
        try:
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise ApiError(400, f"The {PASSPHRASE_HEADER} header must be UTF-8.") from None


default_handlers = [
    (r"/api/admin/providers/export", ExportHandler),
    (r"/api/admin/providers/restore", RestoreHandler),
]
