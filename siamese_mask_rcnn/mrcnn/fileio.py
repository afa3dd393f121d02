"""Atomic file writing: a crash mid-write never leaves a truncated checkpoint or JSON."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; when the block succeeds, flush it to disk and
    rename it onto ``path`` (``os.replace``: atomic on POSIX and Windows). On error the
    temporary file is removed and ``path`` is left as it was. Parent folders are created."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
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
