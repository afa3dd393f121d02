"""Arguments and checks shared by the command-line programs (``coco.py``,
``train_siamese.py``, ``evaluate_siamese.py``): the COCO data flags, count checks and the
``TF_CONFIG`` check of ``--multi-worker``, where a bad value stops with exit status 2 and a
message naming the flag, before any data is read. Imports no TensorFlow."""
import argparse
import os

from .datasets.coco import parse_split


def coco_parser(prog, description, dataset_help, split_help, file_flags):
    """An ``ArgumentParser`` named ``prog`` (default: the script's name) with a "data" group
    holding ``--dataset`` (the COCO root, described by ``dataset_help``), ``--year``
    (default ``"2017"``), the ``file_flags`` (``{flag: help}``, e.g. ``--annotations``: files
    given instead of ``--dataset``) and ``--split`` (``1``..``4`` or ``all``, default 1,
    described by ``split_help``). Returns ``(parser, data_group)``; callers add their own
    flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help=dataset_help)
    data.add_argument("--year", default="2017", help="COCO year (default 2017)")
    for flag, text in file_flags.items():
        data.add_argument(flag, help=text)
    data.add_argument("--split", type=parse_split, default=1, metavar="{1,2,3,4,all}",
                      help=split_help + " (default 1)")
    return parser, data


def flag_name(dest):
    """The command-line spelling of an argparse destination: ``steps_per_epoch`` ->
    ``--steps-per-epoch``."""
    return "--" + dest.replace("_", "-")


def require_file(parser, path, what):
    """Stop via ``parser.error`` (``SystemExit`` status 2) with ``"<what> file not found:
    <path>"`` if ``path`` is given (not None / empty) but is not a file.

    Raises:
        SystemExit: status 2, naming ``what`` and the path.
    """
    if path and not os.path.isfile(path):
        parser.error(f"{what} file not found: {path}")


def require_at_least(parser, args, minimum, *dests):
    """Stop via ``parser.error`` (``SystemExit`` status 2) if any of the ``dests`` of
    ``args`` is below ``minimum``; a ``None`` value (flag not given) passes.

    Raises:
        SystemExit: status 2, naming the first offending flag and its value.
    """
    for dest in dests:
        value = getattr(args, dest)
        if value is not None and value < minimum:
            parser.error(f"{flag_name(dest)} must be >= {minimum}, got {value}")


def check_tf_config(parser, multi_worker, environ=None):
    """The cluster of ``--multi-worker`` (a ``cluster.ClusterTask``), checked before
    TensorFlow starts: a ``TF_CONFIG`` that cannot describe a multi-machine run stops via
    ``parser.error`` naming what is wrong (see ``cluster.read_tf_config``). Without
    ``--multi-worker`` the variable is ignored (TensorFlow trains on this machine only), and
    so is an empty ``TF_CONFIG`` with it (one machine; the caller warns).

    Raises:
        SystemExit: status 2, the message starting with ``TF_CONFIG``.
    """
    from .cluster import SINGLE_MACHINE, read_tf_config
    if not multi_worker:
        return SINGLE_MACHINE
    environ = os.environ if environ is None else environ
    try:
        return read_tf_config(environ.get("TF_CONFIG"))
    except ValueError as err:
        parser.error(f"--multi-worker: {err}")
