"""Atomic file writing (a crash mid-write never leaves a truncated checkpoint or JSON), removal
of the partial files a killed write leaves behind, and the check that an output folder is
writable before any long work starts."""
import contextlib
import os
import re
import shutil
import tempfile

#: Marker in the names of the hidden temporary files of :func:`atomic_write`.
PARTIAL_MARKER = ".partial-"
# hidden temporary files of atomic_write, and the "<prefix>_temp" folders TensorFlow's
# checkpoint writer uses before it renames its files into place
_PARTIAL_FILE = re.compile(r"^\..+" + re.escape(PARTIAL_MARKER) + r"[^/\\]+$")
_TF_PARTIAL = re.compile(r"^.+\.state_temp[^/\\]*$")


class UnwritableOutputError(OSError):
    """An output folder cannot be created or written (the message names the path)."""


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; when the block succeeds, flush it to disk and
    rename it onto ``path`` (``os.replace``: atomic on POSIX and Windows). On error the
    temporary file is removed and ``path`` is left as it was. Parent folders are created.

    The temporary file is hidden and named ``.<name>.partial-<random><suffix>``; a process
    killed mid-write leaves it behind, and :func:`remove_partial_files` removes it later.

    Raises:
        Whatever the block raises (``OSError`` when writing or renaming fails), after removing the temporary file.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{PARTIAL_MARKER}", suffix=suffix,
                               dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def is_partial_file(name):
    """Whether the file or folder name ``name`` is left over from an interrupted write: an
    :func:`atomic_write` temporary file, or the ``*.state_temp*`` folder of a training-state
    checkpoint TensorFlow had not finished."""
    return bool(_PARTIAL_FILE.match(name) or _TF_PARTIAL.match(name))


def remove_partial_files(directory):
    """Remove the leftovers of interrupted writes (see :func:`is_partial_file`) directly in
    ``directory``; returns the removed paths. Only call it on a folder no other process
    writes to (a run folder is used by one process only)."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not is_partial_file(name):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(path)
    return removed


def check_folder_possible(path, what="output folder"):
    """Check, without creating anything, that the folder ``path`` exists or could be created:
    neither it nor its nearest existing ancestor is a file. Returns the path.

    Raises:
        UnwritableOutputError: naming ``what``, the path and the file in the way.
    """
    path = os.fspath(path)
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # the nearest existing ancestor
    if not os.path.isdir(existing):
        if existing == os.path.abspath(path):
            raise UnwritableOutputError(f"the {what} {path} is a file, not a folder")
        raise UnwritableOutputError(f"cannot create the {what} {path}: {existing} is a file, not a folder")
    return path


def _first_missing_dir(path):
    """The outermost folder on the way to ``path`` that does not exist yet (absolute), or None
    when ``path`` exists."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


@contextlib.contextmanager
def removed_if_failed(*folders):
    """Run the block; if it raises, remove again every one of ``folders`` (and the parents
    made for it) that did not exist before the block and is still empty: output folders made
    by an early writability check, when the work that would fill them never came. Anything
    not empty, or not removable, stays; the exception propagates."""
    before = [(os.path.abspath(f), _first_missing_dir(f)) for f in folders if f]
    try:
        yield
    except BaseException:
        for path, first_missing in before:
            if first_missing is None:  # existed before the block: never removed
                continue
            while True:  # the folder, then its parents up to the first one the block made
                try:
                    os.rmdir(path)
                except OSError:
                    break
                if path == first_missing or os.path.dirname(path) == path:
                    break
                path = os.path.dirname(path)
        raise


def ensure_writable_dir(path, what="output folder"):
    """Create the folder ``path`` if needed and check a file can be written in it (a probe file
    is created and removed). Call it before any long work.

    Returns the path.

    Raises:
        UnwritableOutputError: the folder cannot be created (e.g. it or a parent is a file, or
            a parent is read-only) or written; the message names ``what`` and the path.
    """
    path = check_folder_possible(path, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UnwritableOutputError(f"cannot create the {what} {path}: {reason}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UnwritableOutputError(f"the {what} {path} is not writable (creating a file there "
                                    f"failed: {reason})") from None
    return path


def safe_filename(name, keep="A-Za-z0-9.-", default="unnamed", max_length=100):
    """``name`` (e.g. a category name from a dataset) made safe as one path component.

    Every run of characters outside ``keep`` (a regex character-class body) becomes ``_``
    — so ``/``, ``\\``, ``:``, spaces and control characters never reach the file system —
    leading/trailing ``.``, ``_`` and ``-`` are stripped (no hidden files, no ``..``), the
    result is cut to ``max_length`` characters and is ``default`` if nothing is left.
    ``"Korean/character13"`` → ``"Korean_character13"``.
    """
    import re

    safe = re.sub(f"[^{keep}]+", "_", str(name)).strip("._-")[:max_length].strip("._-")
    return safe or default
