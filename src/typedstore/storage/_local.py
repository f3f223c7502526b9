"""Storage in a local directory: atomic writes, memory-mapped reads."""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import shutil
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from pathlib import Path

from typedstore.errors import InvalidKeyError, NotFoundError, StorageError, TypedStoreError
from typedstore.keys import check_key, is_valid_segment
from typedstore.policy import LARGE, OPEN_FOLDERS, PART, SMALL, SYNC_THREADS
from typedstore.protocols import Buffer, Reader, byte_view, check_range

__all__ = ["LocalStorage"]

# Temporary names start with "~", which no key segment may hold: a temp file can never
# be mistaken for an object, whatever its name.
_TEMP_PREFIX = "~tmp-"
# O_NONBLOCK: opening a FIFO placed under a key would otherwise wait for a writer forever
# (it is then refused as not a regular file); it changes nothing for regular files.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_READ_OPEN = _READ_FLAGS | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)
# Remembered folders are used and closed under this lock only: a descriptor closed by one
# thread while another opens a file relative to it could meanwhile name another folder.
_folders_lock = threading.Lock()


def _new_lock() -> None:
    global _folders_lock
    _folders_lock = threading.Lock()  # a fork may copy it locked by a thread it dropped


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def _close_all(folders: dict[str, int]) -> None:
    for directory in folders.values():
        with contextlib.suppress(OSError):
            os.close(directory)
    folders.clear()


try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # -1 means no fixed limit
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


class LocalStorage:
    """Objects as files under a root directory.

    Writes go to a temporary file in the target directory and are renamed into place, so
    a reader sees a whole object or none. With ``fsync=True`` the file and its directory
    are flushed to disk before ``write`` returns, so the object survives power loss.
    Every object is reached from the root one folder at a time, each opened relative to
    the one before and never through a symlink, so a folder swapped for a symlink after
    any check cannot lead a read or write outside the root. A symlink inside the root (to
    a folder or a file) is followed only if it resolves inside the root, and then by its
    real path, opened the same way. Folders once opened stay open (a few dozen per
    storage) and are used by descriptor: a folder moved away while the process runs
    keeps its objects' reads and writes until it is deleted through this storage.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._url = Path(self._root).as_uri()
        self._fsync = fsync
        self._real_root: str | None = None
        # O_TMPFILE needs Linux and /proc (to name the file once it is written).
        self._tmpfile = getattr(os, "O_TMPFILE", 0) if os.path.isdir("/proc/self/fd") else 0
        # Folders opened before (by key prefix): descriptors, so that a folder swapped for
        # a symlink since changes nothing, and a walk from the root is not paid per call.
        self._folders: dict[str, int] = {}
        weakref.finalize(self, _close_all, self._folders)

    @property
    def root(self) -> Path:
        """The root directory (absolute)."""
        return Path(self._root)

    @property
    def url(self) -> str:
        """The root directory as a ``file://`` URL."""
        return self._url

    @property
    def fsync(self) -> bool:
        """Whether writes are flushed to disk before they return."""
        return self._fsync

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Store the concatenation of ``chunks`` under ``key`` atomically; return its size."""
        parent, name = _split(key)
        return self._write_chunks(key, parent, lambda: name, chunks)

    def write_named(self, prefix: str, chunks: Sequence[Buffer], name: Callable[[], str]) -> str:
        """Store the chunks atomically in folder ``prefix``, named ``name()`` once their
        bytes are in the file; return the key."""
        names: list[str] = []

        def checked() -> str:
            names.append(name())
            if not is_valid_segment(names[-1]):
                raise InvalidKeyError(f"{names[-1]!r} is not a valid object name")
            return names[-1]

        self._write_chunks(f"{check_key(prefix, what='prefix')}/...", prefix, checked, chunks)
        return f"{prefix}/{names[-1]}"

    def _write_chunks(
        self, key: str, parent: str, name: Callable[[], str], chunks: Sequence[Buffer]
    ) -> int:
        views = [byte_view(chunk) for chunk in chunks]
        total = 0
        for view in views:
            total += view.nbytes
        if total <= SMALL and len(views) > 1:
            views = [memoryview(b"".join(views))]  # one system call beats several
        body = functools.partial(_write_views, views, total)
        try:
            self._write(key, parent, name, body, total)
        except _CannotLink:
            # This system refuses to name a file by its /proc/self/fd link (a security
            # module, a container): named temporary files from now on.
            self._tmpfile = 0
            self._write(key, parent, name, body, total)
        return total

    def write_from(self, key: str, reader: Reader, size: int) -> int:
        """Store ``size`` bytes of ``reader`` under ``key`` atomically, a part at a time:
        memory stays within one part whatever the size."""
        parent, name = _split(key)
        body = functools.partial(_write_parts, f"{key!r} under {self.url}", reader, size)
        try:
            self._write(key, parent, lambda: name, body, size)
        except _CannotLink:
            self._tmpfile = 0
            self._write(key, parent, lambda: name, body, size)
        return size

    def _write(
        self, key: str, parent: str, name: Callable[[], str], body: Callable[[int], int], total: int
    ) -> None:
        for attempt in (1, 2):
            directory = self._folder(parent)
            try:
                # Small objects go to an unnamed file (cheaper than a temporary name and a
                # rename); for large ones the rename costs nothing next to the write.
                fd, tmp = self._create(directory, unnamed=total < LARGE)
                break
            except FileNotFoundError as exc:
                # The folder was removed since it was opened (a delete): open it again.
                os.close(directory)
                self._forget(parent)
                if attempt == 2:
                    raise StorageError(f"cannot write {key!r} under {self.url}: {exc}") from exc
            except OSError as exc:
                os.close(directory)
                raise StorageError(f"cannot write {key!r} under {self.url}: {exc}") from exc
        try:
            self._fill(key, directory, name, fd, tmp, body, total)
        finally:
            os.close(directory)

    def _fill(
        self,
        key: str,
        directory: int,
        name: Callable[[], str],
        fd: int,
        tmp: str | None,
        body: Callable[[int], int],
        total: int,
    ) -> None:
        """Write the object's ``total`` bytes to the new file ``fd`` with ``body`` and
        give it the name ``name()``."""
        try:
            try:
                if total >= LARGE:
                    _preallocate(fd, total)
                done = body(fd)
                if done != total:
                    raise OSError(errno.EIO, "the system wrote less than asked")
                if self._fsync:
                    os.fsync(fd)
                final = name()
                if tmp is None:
                    tmp = _link(fd, directory, final)
            finally:
                os.close(fd)
            if tmp is not None:
                os.replace(tmp, final, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=directory)
            # Our own errors (a damaged or short source, say) already say what failed.
            if isinstance(exc, (_CannotLink, TypedStoreError)):
                raise
            if isinstance(exc, IsADirectoryError):
                raise StorageError(f"cannot write {key!r}: a prefix of that name exists") from exc
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {key!r} under {self.url}: {exc}") from exc
            raise
        if self._fsync:
            try:
                os.fsync(directory)
            except OSError as exc:
                raise StorageError(f"cannot flush directory of {key!r}: {exc}") from exc

    def _create(self, directory: int, *, unnamed: bool) -> tuple[int, str | None]:
        """A new file in ``directory`` to write an object into, and its temporary name
        (None: it has none)."""
        if unnamed and self._tmpfile:
            try:
                # Linux: a file with no name until it is complete, so that nothing of an
                # interrupted write is ever left behind (and one directory update fewer).
                flags = self._tmpfile | os.O_WRONLY | os.O_CLOEXEC
                return os.open(".", flags, 0o666, dir_fd=directory), None
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._tmpfile = 0  # this filesystem or kernel has no O_TMPFILE
        tmp = f"{_TEMP_PREFIX}{os.urandom(12).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(tmp, flags, 0o666, dir_fd=directory), tmp

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of the object from ``start`` (to its end when None)."""
        fd, size = self._open(key)
        try:
            if start or length is not None:
                return self._pread(key, fd, size, start, size - start if length is None else length)
            # The whole object, the hot path of small reads: most often one call.
            try:
                data = os.read(fd, size)
            except OSError as exc:
                raise self._read_error(key, exc) from exc
            if len(data) == size or not data:
                return data
            return data + self._pread(key, fd, size, len(data), size - len(data))
        finally:
            os.close(fd)

    def readinto(self, key: str, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` from offset ``start`` with ``preadv``, straight into them."""
        fd, _ = self._open(key)
        try:
            return self._preadv(key, fd, start, buffers)
        finally:
            os.close(fd)

    def open(self, key: str) -> contextlib.AbstractContextManager[Reader]:
        """A reader holding one open file: ``pread`` straight into the caller's memory."""
        return _FileReader(self, key)

    @contextlib.contextmanager
    def open_view(self, key: str) -> Iterator[memoryview]:
        """A read-only view of the object; memory-mapped for large files."""
        mapped = None
        with _FileReader(self, key) as reader:
            try:
                if reader.size < LARGE:
                    view = memoryview(reader.read(0, reader.size))
                else:
                    mapped = mmap.mmap(reader.fileno(), 0, access=mmap.ACCESS_READ)
                    view = memoryview(mapped)
            except OSError as exc:
                raise self._read_error(key, exc) from exc
        try:
            yield view
        finally:
            if mapped is not None:
                try:
                    view.release()
                    mapped.close()
                except BufferError:
                    # Something still exports the map (a zero-copy result): the map is
                    # closed when the last such result is garbage collected.
                    pass

    def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``."""
        fd, size = self._open(key)
        os.close(fd)
        return size

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys of the objects under ``prefix``, sorted; temporary files are skipped, and so
        is anything but a regular file (see :meth:`others`)."""
        return self._under(prefix, objects=True)

    def others(self, prefix: str | None = None) -> Iterator[str]:
        """Paths under ``prefix`` (relative to the root, sorted) of what is neither an
        object nor a folder: symlinks, pipes, sockets and devices, which are never read."""
        return self._under(prefix, objects=False)

    def _under(self, prefix: str | None, *, objects: bool) -> Iterator[str]:
        if prefix is None:
            base = self._root
        else:
            check_key(prefix, what="prefix")
            base = os.path.join(self._root, *prefix.split("/"))
        real = self._contained(base)
        if not os.path.isdir(real):
            if prefix is None or not os.path.lexists(base):
                return iter([])
            regular = os.path.isfile(real)  # real: a symlink that resolves inside the root
            return iter([prefix] if regular is objects else [])
        head = [] if prefix is None else [prefix]
        found = _files_under(real, self._root_real(), objects=objects)
        return iter(sorted("/".join([*head, *parts]) for parts in found))

    def last_modified(self, prefix: str) -> float | None:
        """The newest modification time of the prefix's folder, its subfolders and files."""
        try:
            real = self._contained(os.path.join(self._root, *check_key(prefix).split("/")))
            newest = os.stat(real).st_mtime
            for dirpath, _, filenames in os.walk(real):
                newest = max(newest, os.stat(dirpath).st_mtime)
                for name in filenames:
                    with contextlib.suppress(FileNotFoundError):
                        newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
        except FileNotFoundError:
            return None
        return newest

    def sync(self, prefix: str) -> None:
        """Flush every object under ``prefix`` to disk, then its folders and the folders
        above it up to the root (which name them), so that all survive power loss."""
        segments = check_key(prefix, what="prefix").split("/")
        real = self._contained(os.path.join(self._root, *segments))
        if not os.path.lexists(real):
            return
        files, folders = [], []
        if os.path.isdir(real):
            try:
                # fwalk: each folder by a descriptor, never through a symlink.
                for dirpath, dirnames, filenames, _ in os.fwalk(real):
                    dirnames[:] = [d for d in dirnames if is_valid_segment(d)]
                    folders.append(dirpath)
                    files += [os.path.join(dirpath, n) for n in filenames if is_valid_segment(n)]
            except OSError as exc:
                raise StorageError(f"cannot list {prefix!r} to flush it to disk: {exc}") from exc
        else:
            files.append(real)
        folders.reverse()  # deepest first: a folder is named only once its contents are
        root, above = self._root_real(), real
        while above != root:
            above = os.path.dirname(above)
            folders.append(above)
        if len(files) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(SYNC_THREADS, len(files))) as pool:
                list(pool.map(self._flush, files))
        else:
            for path in files:
                self._flush(path)
        for path in folders:
            self._flush(path)

    def _flush(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return  # removed meanwhile: nothing of it to keep
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # a symlink: its target is an object of its own
            raise StorageError(f"cannot open {path} to flush it to disk: {exc}") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"cannot flush {path} to disk: {exc}") from exc
        finally:
            os.close(fd)

    def remove_temporary(self, older_than: float) -> int:
        """Remove temporary files (``~tmp-*``) older than ``older_than`` seconds."""
        if not os.path.isdir(self._root):
            return 0
        cutoff = time.time() - older_than
        removed = 0
        # fwalk: each folder by a descriptor, never through a symlink.
        for _, dirnames, filenames, directory in os.fwalk(self._root_real()):
            dirnames[:] = [d for d in dirnames if is_valid_segment(d)]
            for name in filenames:
                if not name.startswith(_TEMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(name, dir_fd=directory, follow_symlinks=False).st_mtime <= cutoff:
                        os.unlink(name, dir_fd=directory)
                        removed += 1
        return removed

    def delete(self, prefix: str) -> int:
        """Remove the object ``prefix`` or the whole subtree under it; return the count.

        Deleting ``exp1`` never touches ``exp10``: only the path ``<root>/exp1`` and what is
        under it are removed. A symlink is removed itself, never followed.
        """
        parent, name = _split(prefix, what="prefix")
        try:
            directory = self._open_dir(parent, create=False)
        except NotFoundError:
            return 0
        try:
            st = os.stat(name, dir_fd=directory, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                count = sum(1 for _ in self.list(prefix))
                self._forget(prefix)
                _remove_tree(name, directory)
                return count
            os.unlink(name, dir_fd=directory)
            return 1
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"cannot delete {prefix!r} under {self.url}: {exc}") from exc
        finally:
            os.close(directory)

    def _root_real(self) -> str:
        if self._real_root is None:
            real = os.path.realpath(self._root)
            if not os.path.isdir(real):
                return real  # not created yet: do not remember a guess
            self._real_root = real
        return self._real_root

    def _contained(self, path: str) -> str:
        """``path`` with symlinks resolved, checked to be inside the root."""
        try:
            real = os.path.realpath(path)
        except OSError as exc:  # a symlink swapped for something else while resolved
            raise InvalidKeyError(f"{path} changed while it was resolved: {exc}") from exc
        root = self._root_real()
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise InvalidKeyError(f"{path} resolves outside the store root {root}")
        return real

    def _open_dir(self, parent: str, *, create: bool) -> int:
        """A descriptor of the folder for keys under ``parent`` (the caller closes it).

        Raises NotFoundError when it does not exist and ``create`` is false."""
        segments = parent.split("/") if parent else []
        try:
            return self._walk(segments, create=create, what=parent)
        except _Symlink:
            # A symlinked folder: followed only inside the root, by its real path.
            real = self._contained(os.path.join(self._root, *segments))
            try:
                return self._walk(self._relative(real), create=create, what=parent)
            except _Symlink:
                raise InvalidKeyError(f"prefix {parent!r} changed while it was opened") from None

    def _walk(self, segments: Sequence[str], *, create: bool, what: str) -> int:
        """Open the folder ``segments`` below the root one at a time, never through a
        symlink (raising _Symlink at one), creating missing ones if ``create``."""
        directory = self._open_root(create=create, what=what)
        try:
            for segment in segments:
                inner = self._step(directory, segment, create=create, what=what)
                os.close(directory)
                directory = inner
        except BaseException:
            os.close(directory)
            raise
        return directory

    def _step(self, directory: int, segment: str, *, create: bool, what: str) -> int:
        for _ in range(2):
            try:
                return os.open(segment, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            except FileNotFoundError:
                if not create:
                    raise NotFoundError(f"no prefix {what!r} in {self.url}") from None
                try:
                    os.mkdir(segment, dir_fd=directory)
                except FileExistsError:
                    pass
                except OSError as exc:  # the folder above was removed meanwhile, or full
                    raise StorageError(
                        f"cannot create prefix {what!r} under {self.url}: {exc}"
                    ) from exc
            except NotADirectoryError as exc:
                # O_NOFOLLOW on a symlink fails with ELOOP on most systems, ENOTDIR here
                # and there: look at what is there.
                try:
                    mode = os.stat(segment, dir_fd=directory, follow_symlinks=False).st_mode
                except OSError:
                    raise _Symlink from None  # changed meanwhile: resolved again, or refused
                if stat.S_ISLNK(mode):
                    raise _Symlink from None
                if not create:
                    raise NotFoundError(f"no prefix {what!r} in {self.url}") from None
                raise StorageError(
                    f"cannot create prefix {what!r}: an object is in the way"
                ) from exc
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _Symlink from None
                raise StorageError(f"cannot open prefix {what!r} under {self.url}: {exc}") from exc
        raise StorageError(f"prefix {what!r} under {self.url} vanished while it was created")

    def _open_root(self, *, create: bool, what: str) -> int:
        """A descriptor of the root folder, made first if missing and ``create``."""
        try:
            try:
                return os.open(self._root_real(), _DIR_FLAGS)
            except FileNotFoundError:
                if not create:
                    raise NotFoundError(f"no prefix {what!r} in {self.url}") from None
            os.makedirs(self._root, exist_ok=True)
            self._real_root = None  # remembered only once the root exists
            return os.open(self._root_real(), _DIR_FLAGS)
        except OSError as exc:
            if isinstance(exc, NotFoundError):
                raise
            raise StorageError(f"cannot open the store root {self._root}: {exc}") from exc

    def _relative(self, real: str) -> Sequence[str]:
        """The segments of the real path ``real`` (inside the root) below the root."""
        relative = os.path.relpath(real, self._root_real())
        return [] if relative == "." else relative.split(os.sep)

    def _open(self, key: str) -> tuple[int, int]:
        """A descriptor of the regular file under ``key`` and its size (the caller closes
        the descriptor)."""
        parent, name = _split(key)
        with _folders_lock:
            folder = self._folders.get(parent)
            try:
                fd = -1 if folder is None else os.open(name, _READ_OPEN, dir_fd=folder)
            except OSError:
                fd = -1  # gone since, a symlink, an error: the walk below tells which
        if fd < 0:
            fd = self._open_walking(key, parent, name)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._read_error(key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFoundError(f"no object under key {key!r} in {self.url}")
        return fd, st.st_size

    def _open_walking(self, key: str, parent: str, name: str) -> int:
        """``_open`` with the folder opened afresh from the root (then remembered)."""
        try:
            directory = self._open_dir(parent, create=False)
        except NotFoundError:
            raise NotFoundError(f"no object under key {key!r} in {self.url}") from None
        try:
            fd = os.open(name, _READ_OPEN, dir_fd=directory)
        except OSError as exc:
            os.close(directory)
            if exc.errno != errno.ELOOP:
                raise self._read_error(key, exc) from exc
            return self._open_link(key)
        self._remember(parent, directory)
        return fd

    def _folder(self, parent: str) -> int:
        """A descriptor of the folder for keys under ``parent``, created if missing (the
        caller closes it)."""
        try:
            with _folders_lock:
                folder = self._folders.get(parent)
                if folder is not None:
                    return os.dup(folder)
            directory = self._open_dir(parent, create=True)
            try:
                self._remember(parent, os.dup(directory))
            except BaseException:
                os.close(directory)
                raise
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot open prefix {parent!r} under {self.url}: {exc}") from exc
        return directory

    def _remember(self, parent: str, directory: int) -> None:
        """Keep ``directory`` (now owned here) as the folder of ``parent``."""
        with _folders_lock:
            old = self._folders.pop(parent, None)
            if old is not None:
                os.close(old)
            if len(self._folders) >= OPEN_FOLDERS:
                _close_all(self._folders)
            self._folders[parent] = directory

    def _forget(self, prefix: str) -> None:
        """Close the remembered folders of ``prefix`` and below (removed, or gone)."""
        with _folders_lock:
            inner = prefix + "/"
            for parent in [p for p in self._folders if p == prefix or p.startswith(inner)]:
                os.close(self._folders.pop(parent))

    def _open_link(self, key: str) -> int:
        """The file a symlink under ``key`` names, if it is inside the root."""
        real = self._contained(os.path.join(self._root, *key.split("/")))
        *folders, name = self._relative(real)
        try:
            directory = self._walk(folders, create=False, what=key)
        except (_Symlink, NotFoundError):
            raise NotFoundError(f"no object under key {key!r} in {self.url}") from None
        try:
            return os.open(name, _READ_OPEN, dir_fd=directory)
        except OSError as exc:
            raise self._read_error(key, exc) from exc
        finally:
            os.close(directory)

    def _pread(self, key: str, fd: int, size: int, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of the open object from ``start``."""
        if start < 0 or length < 0:
            check_range(start, length)  # raises, with the message
        # Never more than the file holds: a length from a hostile header must not
        # become an allocation.
        remaining = max(0, min(length, size - start))
        parts: list[bytes] = []
        try:
            while remaining > 0:
                part = os.pread(fd, remaining, start)
                if not part:
                    break
                if not parts and len(part) == remaining:
                    return part  # most often, one call gets it all
                parts.append(part)
                start += len(part)
                remaining -= len(part)
        except OSError as exc:
            raise self._read_error(key, exc) from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _preadv(self, key: str, fd: int, start: int, buffers: Sequence[Buffer]) -> int:
        """Fill ``buffers`` one after the other from ``start`` of the open object."""
        if start < 0:
            check_range(start, 0)  # raises, with the message
        # Views of the buffers as they are (no cast to bytes, which fails for an empty
        # array of several dimensions): only one cut short is cast to go on.
        targets = [memoryview(buffer) for buffer in buffers]
        for target in targets:
            if not target.c_contiguous:
                raise ValueError("buffer is not C-contiguous")
        try:
            if len(targets) != 1:
                return _vectored(os.preadv, fd, start, targets)
            # One plain call, as a read mostly gets all it asks for.
            got = os.preadv(fd, targets, start)
            if 0 < got < targets[0].nbytes:
                got += _vectored(os.preadv, fd, start + got, [byte_view(targets[0])[got:]])
            return got
        except OSError as exc:
            raise self._read_error(key, exc) from exc

    def _read_error(self, key: str, exc: OSError) -> Exception:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
            return NotFoundError(f"no object under key {key!r} in {self.url}")
        return StorageError(f"cannot read {key!r} under {self.url}: {exc}")


def _write_views(views: list[memoryview], total: int, fd: int) -> int:
    # One call for all the chunks: a file written so reads back faster.
    if len(views) == 1:
        done = os.pwrite(fd, views[0], 0)
        if done < total:
            done += _vectored(os.pwritev, fd, done, [views[0][done:]])
        return done
    return _vectored(os.pwritev, fd, 0, views)


def _write_parts(target: str, reader: Reader, size: int, fd: int) -> int:
    part = memoryview(bytearray(min(PART, size)))
    done = 0
    while done < size:
        got = reader.readinto(done, part[: min(PART, size - done)])
        if not got:
            raise StorageError(
                f"cannot write {target}: the source ended after {done} of its {size} bytes"
            )
        done += _vectored(os.pwritev, fd, done, [part[:got]])
    return done


def _split(key: str, *, what: str = "key") -> tuple[str, str]:
    parent, _, name = check_key(key, what=what).rpartition("/")
    return parent, name


class _FileReader:
    # A class rather than a generator-based context manager: a reader is opened for
    # every read, and this one costs less.
    __slots__ = ("_fd", "_key", "_storage", "size")

    def __init__(self, storage: LocalStorage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._fd = -1
        self.size = 0

    def __enter__(self) -> _FileReader:
        # The file is opened here, not before: a reader never entered holds nothing.
        self._fd, self.size = self._storage._open(self._key)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def fileno(self) -> int:
        return self._fd

    def read(self, start: int, length: int) -> bytes:
        return self._storage._pread(self._key, self._fd, self.size, start, length)

    def readinto(self, start: int, *buffers: Buffer) -> int:
        if len(buffers) == 1 and type(buffers[0]) is bytearray and start >= 0:
            # A small object read whole, the most common read: one call, no checks.
            try:
                got = os.preadv(self._fd, buffers, start)
            except OSError as exc:
                raise self._storage._read_error(self._key, exc) from exc
            if got == len(buffers[0]) or not got:
                return got
            rest = memoryview(buffers[0])[got:]
            return got + self._storage._preadv(self._key, self._fd, start + got, [rest])
        return self._storage._preadv(self._key, self._fd, start, buffers)


def _link(fd: int, directory: int, name: str) -> str | None:
    """Give the unnamed file ``fd`` the name ``name`` in ``directory``.

    Returns None when done, or a temporary name to rename over ``name`` when something
    is already there (linking never replaces).
    """
    source = f"/proc/self/fd/{fd}"
    # Only linkat() with AT_SYMLINK_FOLLOW names the file behind /proc/self/fd; os.link
    # calls it when a directory descriptor is given.
    try:
        try:
            os.link(source, name, dst_dir_fd=directory, follow_symlinks=True)
            return None
        except FileExistsError:
            tmp = f"{_TEMP_PREFIX}{os.urandom(12).hex()}"
            os.link(source, tmp, dst_dir_fd=directory, follow_symlinks=True)
            return tmp
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EXDEV):
            raise _CannotLink from exc
        raise


class _CannotLink(Exception):
    """Naming an O_TMPFILE file through /proc/self/fd is not allowed here."""


class _Symlink(Exception):
    """A folder on the way to a key is a symlink."""


def _vectored(
    call: Callable[[int, Sequence[memoryview], int], int],
    fd: int,
    start: int,
    views: MutableSequence[memoryview],
) -> int:
    """Run ``call`` (``os.preadv`` or ``os.pwritev``) over ``views`` from offset ``start``,
    with as few calls as the system allows (up to IOV_MAX buffers and about 2 GiB a call
    on Linux), until all are done or a call moves nothing; return the bytes moved."""
    done = first = 0
    while first < len(views):
        got = call(fd, views[first : first + _IOV_MAX], start + done)
        if not got:
            break
        done += got
        # Skip the buffers done; the one done in part goes on from where it is.
        while first < len(views) and got >= views[first].nbytes:
            got -= views[first].nbytes
            first += 1
        if got:
            views[first] = byte_view(views[first])[got:]
    return done


def _files_under(top: str, root: str, *, objects: bool = True) -> Iterator[list[str]]:
    """The path segments, from ``top``, of each object under it: a regular file, or a
    symlink to one inside ``root`` (real path), whose names are all valid segments
    (temporary files are not). With ``objects=False``, of every other entry that is not
    a folder: symlinks that reads refuse, pipes, sockets, devices. Directories are never
    entered through a symlink."""
    pending: list[tuple[str, list[str]]] = [(top, [])]
    while pending:
        path, parts = pending.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:  # removed meanwhile, or unreadable: as os.walk, go on
            continue
        for entry in entries:
            if not is_valid_segment(entry.name):
                continue
            # The type comes with the directory listing: no stat, except for a symlink.
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, [*parts, entry.name]))
            elif _is_object(entry, root) is objects:
                yield [*parts, entry.name]


def _is_object(entry: os.DirEntry[str], root: str) -> bool:
    if not entry.is_symlink():
        return entry.is_file()
    real = os.path.realpath(entry.path)
    return real.startswith(root + os.sep) and os.path.isfile(real)


def _remove_tree(name: str, directory: int) -> None:
    # A writer may add a file while the tree goes (a persist whose generation another
    # process is collecting), and the last rmdir then fails: go round again. Such a writer
    # finds its folder gone at its next write, or its earlier objects gone when it commits.
    for attempt in range(1, _REMOVE_ATTEMPTS + 1):
        try:
            shutil.rmtree(name, dir_fd=directory)  # never follows a symlink
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == _REMOVE_ATTEMPTS:
                raise


_REMOVE_ATTEMPTS = 10


def _preallocate(fd: int, size: int) -> None:
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        # Filesystems without support just skip the optimisation; ENOSPC is real.
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
