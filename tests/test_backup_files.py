"""write_atomically on real files: planted links are not followed, temporary names are fresh and
never left behind, the file is 0600 under any umask, and two writing processes never tear it."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.processes import ROOT, TEST_SECRET, kill_server_process, start_server_process
from registry.backup_file import BackupWriteFailed, document_parts, write_atomically

OLD_TEMP_NAME = ".config_backup.json.tmp"
GUESSABLE_TEMP_NAMES = [OLD_TEMP_NAME, "config_backup.json.tmp", ".config_backup.json.new",
                        ".config_backup.json.swp", "config_backup.json~"]
VICTIM_TEXT = "someone else's file\n"


def backup_parts(marker: str) -> list[bytes]:
    return document_parts([json.dumps({"id": 1, "name": marker}).encode()])


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the backup's directory, mode 0644, that a planted link points at."""
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "elsewhere" / "victim.txt"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o644)
    return path


@pytest.fixture
def backup_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data" / "config_backup.json"


def assert_victim_untouched(victim: Path) -> None:
    assert victim.read_text() == VICTIM_TEXT
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert victim.stat().st_nlink == 1


def assert_backup_is(backup_file: Path, parts: list[bytes]) -> None:
    assert not backup_file.is_symlink()
    assert backup_file.stat().st_nlink == 1
    assert backup_file.read_bytes() == b"".join(parts)
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600


def test_symlinks_at_guessable_temp_names_are_not_followed(backup_file, victim):
    for name in GUESSABLE_TEMP_NAMES:
        (backup_file.parent / name).symlink_to(victim)
    parts = backup_parts("after the plant")
    write_atomically(backup_file, parts)
    assert_victim_untouched(victim)
    assert_backup_is(backup_file, parts)
    for name in GUESSABLE_TEMP_NAMES:
        assert os.readlink(backup_file.parent / name) == str(victim)


def test_dangling_symlink_at_the_old_temp_name_creates_no_file_elsewhere(backup_file, victim):
    planted_target = victim.parent / "created-by-the-server"
    (backup_file.parent / OLD_TEMP_NAME).symlink_to(planted_target)
    parts = backup_parts("dangling")
    write_atomically(backup_file, parts)
    assert not planted_target.exists()
    assert_backup_is(backup_file, parts)


def test_hard_link_at_the_old_temp_name_leaves_the_linked_file_alone(backup_file, victim):
    os.link(victim, backup_file.parent / OLD_TEMP_NAME)
    parts = backup_parts("hard link")
    write_atomically(backup_file, parts)
    assert victim.read_text() == VICTIM_TEXT
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert_backup_is(backup_file, parts)


def test_a_directory_at_the_old_temp_name_does_not_block_the_write(backup_file):
    (backup_file.parent / OLD_TEMP_NAME).mkdir()
    parts = backup_parts("past the directory")
    write_atomically(backup_file, parts)
    assert_backup_is(backup_file, parts)


def test_each_write_uses_a_fresh_temp_name_beside_the_backup(backup_file, monkeypatch):
    """os.replace is wrapped (and still called) to see the temporary file just before its rename."""
    seen = []
    real_replace = os.replace

    def recording_replace(source, target):
        info = os.lstat(source)
        seen.append((Path(source), stat.S_ISREG(info.st_mode), stat.S_IMODE(info.st_mode), info.st_nlink))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    for marker in ("first", "second", "third"):
        write_atomically(backup_file, backup_parts(marker))
    names = [path.name for path, *_ in seen]
    assert len(set(names)) == 3, names
    for path, is_regular, mode, links in seen:
        assert path.parent == backup_file.parent
        assert path.name.startswith(".config_backup.json.") and path.name.endswith(".tmp")
        assert path.name != OLD_TEMP_NAME
        assert (is_regular, mode, links) == (True, 0o600, 1)
    assert temp_files(backup_file.parent) == []


def test_failed_rename_raises_backup_write_failed_and_leaves_no_temp_file(backup_file):
    backup_file.mkdir()  # a non-empty directory where the file should be: the rename must fail
    (backup_file / "blocker").write_text("x")
    for marker in ("secret-marker-1", "secret-marker-2"):
        with pytest.raises(BackupWriteFailed) as raised:
            write_atomically(backup_file, backup_parts(marker))
        assert str(raised.value) == (f"Cannot write the backup file {backup_file}: {os.strerror(errno.EISDIR)}. "
                                     "Nothing was changed.")
        assert temp_files(backup_file.parent) == []
    assert sorted(p.name for p in backup_file.parent.iterdir()) == ["config_backup.json"]


WRITE_PAST_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from registry.backup_file import BackupWriteFailed, write_atomically
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    write_atomically(Path(sys.argv[1]), [b"x" * 3000, b"y" * 3000])
except BackupWriteFailed as exc:
    print(exc)
"""


def test_failed_write_raises_backup_write_failed_and_leaves_the_old_file_and_no_temp_file(backup_file):
    """A file-size limit in a child process makes the second writev fail with EFBIG mid-document."""
    old = backup_parts("old")
    write_atomically(backup_file, old)
    child = subprocess.run([sys.executable, "-c", WRITE_PAST_SIZE_LIMIT, str(backup_file)], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == (f"Cannot write the backup file {backup_file}: {os.strerror(errno.EFBIG)}. "
                                   "Nothing was changed.")
    assert_backup_is(backup_file, old)
    assert temp_files(backup_file.parent) == []


def test_an_exception_other_than_os_error_mid_write_still_removes_the_temp_file(backup_file):
    old = backup_parts("old")
    write_atomically(backup_file, old)
    with pytest.raises(TypeError):
        write_atomically(backup_file, [b'{"partial":', "not bytes"])  # type: ignore[list-item]
    assert_backup_is(backup_file, old)
    assert temp_files(backup_file.parent) == []


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277, 0o777], ids=lambda umask: f"umask-{umask:04o}")
def test_backup_file_is_0600_whatever_the_umask(backup_file, umask):
    parts = backup_parts("umask")
    previous = os.umask(umask)
    try:
        write_atomically(backup_file, parts)
    finally:
        os.umask(previous)
    assert_backup_is(backup_file, parts)


WRITE_IN_A_LOOP = """
import sys
from pathlib import Path
from registry.backup_file import BackupWriteFailed, write_atomically
target, document, iterations = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), int(sys.argv[3])
parts = [document[i:i + 65536] for i in range(0, len(document), 65536)]
print("ready", flush=True)
sys.stdin.readline()
failures = []
for _ in range(iterations):
    try:
        write_atomically(target, parts)
    except BackupWriteFailed as exc:
        failures.append(str(exc))
print(len(failures), failures[:1])
"""


def test_two_processes_writing_at_once_never_leave_a_torn_or_foreign_file(backup_file, tmp_path):
    """The server and `python server.py --export` beside it write the same backup file."""
    documents = {}
    for writer, count in (("a", 6000), ("b", 4000)):
        document = json.dumps({"writer": writer, "providers": [{"id": i, "name": f"{writer}-{i}"}
                                                               for i in range(count)]}).encode()
        documents[writer] = document
        (tmp_path / f"document-{writer}.json").write_bytes(document)
    write_atomically(backup_file, [documents["a"]])
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_IN_A_LOOP, str(backup_file),
                                 str(tmp_path / f"document-{writer}.json"), "300"],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
               for writer in documents]
    try:
        for process in writers:
            assert process.stdout.readline() == "ready\n"
        for process in writers:
            process.stdin.write("go\n")
            process.stdin.close()
        reads, bad, seen = 0, [], set()
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in writers) and time.monotonic() < deadline and reads < 100_000:
            data = backup_file.read_bytes()
            reads += 1
            writer = next((w for w, d in documents.items() if d == data), None)
            if writer is None:
                try:
                    json.loads(data)
                    bad.append(f"read {reads}: a foreign document of {len(data)} bytes")
                except ValueError:
                    bad.append(f"read {reads}: not JSON ({len(data)} bytes)")
            else:
                seen.add(writer)
        for process in writers:
            process.wait(60)
        outputs = [(p.stdout.read(), p.stderr.read()) for p in writers]
    finally:
        for process in writers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert [p.returncode for p in writers] == [0, 0], [err for _, err in outputs]
    assert bad == [], f"{len(bad)} of {reads} reads: {bad[:5]}"
    assert [out.strip() for out, _ in outputs] == ["0 []", "0 []"]
    assert seen == {"a", "b"}
    assert backup_file.read_bytes() in documents.values()
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    assert temp_files(backup_file.parent) == []


def test_start_up_removes_temp_files_left_by_a_killed_writer_but_not_fresh_ones(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    stale = [data / ".config_backup.json.tmp", data / ".config_backup.json.k3j2h1.tmp"]
    fresh = data / ".config_backup.json.f7g8h9.tmp"  # e.g. an --export writing right now
    unrelated = data / "notes.tmp"
    for path in (*stale, fresh, unrelated):
        path.write_text("partial")
    two_hours_ago = time.time() - 2 * 3600
    for path in (*stale, unrelated):
        os.utime(path, (two_hours_ago, two_hours_ago))
    server = start_server_process({"BACKEND_API_KEY_SECRET": TEST_SECRET}, tmp_path)
    kill_server_process(server)
    assert not any(path.exists() for path in stale)
    assert fresh.exists() and unrelated.exists()
