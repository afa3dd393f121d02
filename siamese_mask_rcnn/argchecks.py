"""Checks shared by the command-line programs (``coco.py``, ``train_siamese.py``,
``evaluate_siamese.py``): a bad value stops with exit status 2 and a message naming the flag,
before any data is read. Imports nothing of the package."""


def flag_name(dest):
    """The command-line spelling of an argparse destination: ``steps_per_epoch`` ->
    ``--steps-per-epoch``."""
    return "--" + dest.replace("_", "-")


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
