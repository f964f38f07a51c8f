"""Files on disk: the object cache keeps every paid image intact."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixmake.store import ObjectCache, atomic_write, describe_os_error, disk_wide, running_build


def test_the_object_cache_writes_again_a_copy_cut_short(tmp_path: Path) -> None:
    """After a power cut an object file may exist but hold fewer bytes; storing the result again repairs it."""
    objects = ObjectCache(tmp_path / "objects")
    digest = objects.put(b"paid image bytes")
    objects.path(digest).write_bytes(b"")  # what a power cut can leave behind
    assert objects.put(b"paid image bytes") == digest
    assert objects.get(digest) == b"paid image bytes"


@pytest.mark.parametrize("as_text", [False, True], ids=["Path", "str"])
@pytest.mark.parametrize(
    ("durable", "existing", "fsyncs"),
    [(True, False, 2), (True, True, 2), (False, False, 0), (False, True, 1)],
)
def test_outputs_skip_the_fsyncs_only_a_power_cut_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, existing: bool, fsyncs: int, as_text: bool
) -> None:
    """Durable writes sync file and directory; an output syncs nothing, except the directory when it
    replaces a file, so a power cut cannot bring back the old, valid-looking bytes."""
    path = tmp_path / "out" / "hero.png"
    if existing:
        path.parent.mkdir()
        path.write_bytes(b"older image")
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    atomic_write(str(path) if as_text else path, b"new image", durable=durable)
    assert path.read_bytes() == b"new image"
    assert len(synced) == fsyncs
    assert [p.name for p in path.parent.iterdir()] == ["hero.png"]  # no temp file left behind


@pytest.mark.parametrize("name", ["h" * 251 + ".png", "é" * 123 + ".png"], ids=["ascii", "two-byte"])
def test_a_file_whose_name_is_near_the_file_systems_limit_is_written(name: str, tmp_path: Path) -> None:
    """Its temporary file beside it must not pass 255 bytes either (an output named so was never written)."""
    atomic_write(tmp_path / name, b"image")
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"image"


def test_a_bare_file_name_is_written_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write("pixmake.lock", b"lock")
    assert (tmp_path / "pixmake.lock").read_bytes() == b"lock"
    assert [p.name for p in tmp_path.iterdir()] == ["pixmake.lock"]


@given(st.lists(st.binary(max_size=40), max_size=2500), st.integers(min_value=0, max_value=200))
@settings(max_examples=60, deadline=None)
def test_a_write_in_pieces_is_their_concatenation_even_after_short_writes(pieces: list[bytes], cap: int) -> None:
    """A lockfile is written in pieces (one per target, thousands of them); the kernel may take fewer
    bytes than offered in one call, and the file must still hold every byte in order."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[bytes]) -> int:  # as a full disk or a signal can make it
        return real_writev(fd, [b"".join(buffers)[:cap]]) if cap else 0

    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        path = Path(directory) / "pixmake.lock"
        patch.setattr(os, "writev", short_writev)
        atomic_write(path, pieces)
        assert path.read_bytes() == b"".join(pieces)


def test_an_os_error_is_told_with_the_projects_path_of_the_file_it_was_for(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    temp = os.path.join(os.path.realpath(root), "out", ".hero.png.0123456789ab.tmp")  # what atomic_write creates
    full = OSError(errno.ENOSPC, "No space left on device", temp)
    assert describe_os_error(full, root) == f"No space left on device: {os.path.join('out', 'hero.png')}"
    elsewhere = OSError(errno.EACCES, "Permission denied", "/etc/pixmake.conf")
    assert describe_os_error(elsewhere, root) == "Permission denied: /etc/pixmake.conf"
    assert describe_os_error(OSError(errno.EIO, "Input/output error")) == "Input/output error"


@pytest.mark.parametrize(
    ("code", "everywhere"),
    [(errno.ENOSPC, True), (errno.EROFS, True), (errno.EIO, True), (errno.ENOTDIR, False), (errno.EISDIR, False)],
)
def test_a_full_or_read_only_disk_fails_every_write_a_wrong_path_only_its_own(code: int, everywhere: bool) -> None:
    assert disk_wide(OSError(code, os.strerror(code))) is everywhere


@pytest.mark.skipif(os.name != "posix", reason="no cheap liveness probe on Windows: no note there")
def test_a_running_build_is_read_from_its_pid_file_and_a_dead_one_is_no_build(tmp_path: Path) -> None:
    assert running_build(tmp_path) is None
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        (tmp_path / "build.pid").write_text(f"{alive.pid}\n")
        assert running_build(tmp_path) == alive.pid
        alive.kill()
    (tmp_path / "build.pid").write_text(f"{os.getpid()}\n")  # its pid reused by this process (a container's pid 1)
    assert running_build(tmp_path) is None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "build.pid").write_text(gone.stdout)  # a build killed before it could remove its pid file
    assert running_build(tmp_path) is None
    (tmp_path / "build.pid").write_text("half a wri")
    assert running_build(tmp_path) is None
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        (tmp_path / "build.pid").write_text(f"{alive.pid} gc\n")  # gc holds the project: no build's tasks in flight
        assert running_build(tmp_path) is None
        (tmp_path / "build.pid").write_text(f"{alive.pid} build\n")
        assert running_build(tmp_path) == alive.pid
        alive.kill()


@pytest.mark.parametrize("system", ["nt", "posix"])
def test_a_replace_refused_while_another_process_holds_the_file_is_retried_on_windows(
    system: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A virus scanner or an image viewer holding the old output open makes Windows refuse the replace for a
    moment; elsewhere a refused rename is for good, and says so at once."""
    target = tmp_path / "hero.png"
    target.write_bytes(b"old")
    real_replace, refusals = os.replace, [2]
    waits: list[float] = []

    def held_open(src: str, dst: str) -> None:
        if refusals[0]:
            refusals[0] -= 1
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real_replace(src, dst)

    monkeypatch.setattr(os, "name", system)
    monkeypatch.setattr(os, "replace", held_open)
    monkeypatch.setattr(time, "sleep", waits.append)
    if system == "nt":
        atomic_write(target, b"new")
        assert target.read_bytes() == b"new" and len(waits) == 2
    else:
        with pytest.raises(PermissionError):
            atomic_write(target, b"new")
        assert target.read_bytes() == b"old" and waits == []
    assert [p.name for p in tmp_path.iterdir()] == ["hero.png"]  # no temp file left behind


def _full_disk(fd: int, data: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")  # as the kernel says it: no file name


def test_a_write_refused_by_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".pixmake").mkdir()
    monkeypatch.setattr(os, "writev", _full_disk)
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / ".pixmake" / "uploads.json", [b"{}"])
    assert (
        describe_os_error(caught.value, tmp_path)
        == f"No space left on device: {os.path.join('.pixmake', 'uploads.json')}"
    )
    assert os.listdir(tmp_path / ".pixmake") == []  # no temporary file left


def test_gc_can_take_the_project_lock_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pixmake gc` frees a full disk: the lock's note naming its holder is not worth refusing it."""
    from pixmake.store import make_state_dir, project_lock

    state = tmp_path / ".pixmake"
    state.mkdir()
    make_state_dir(state)
    (state / "build.lock").touch()
    monkeypatch.setattr(os, "writev", _full_disk)
    monkeypatch.setattr(os, "write", _full_disk)
    with project_lock(state, "gc"):
        ran = True
    assert ran


@pytest.mark.skipif(os.name != "posix", reason="Windows cannot delete a folder holding an open lock file")
def test_the_project_stays_locked_when_its_state_folder_is_deleted(tmp_path: Path) -> None:
    """`git clean -fdx` during a build deleted .pixmake/build.lock: a second build took a new one and paid
    for everything again."""
    from pixmake.errors import ProjectBusyError
    from pixmake.store import project_lock

    state = tmp_path / ".pixmake"
    with project_lock(state, "build"):
        shutil.rmtree(state)
        busy = pytest.raises(ProjectBusyError, match="another pixmake build is running in this project")
        with busy, project_lock(state, "build"):
            pass
    with project_lock(state, "gc"):  # released with the first
        pass


def test_a_rotted_object_is_removed_when_read_and_stored_anew_when_put(tmp_path: Path) -> None:
    """A bit flipped in .pixmake/objects failed every restore from it, for good: put() kept the rotted copy
    (the size matched) and the plan went on promising a free restore."""
    objects = ObjectCache(tmp_path / "objects")
    data = b"\x89PNG an image" * 100
    digest = objects.put(data)
    rotted = bytearray(data)
    rotted[40] ^= 0x01
    objects.path(digest).write_bytes(bytes(rotted))
    assert objects.put(data) == digest and objects.get(digest) == data  # healed by the next copy
    objects.path(digest).write_bytes(bytes(rotted))
    with pytest.raises(ValueError, match="was corrupt"):
        objects.get(digest)
    assert not objects.has(digest)  # no plan counts on it again
