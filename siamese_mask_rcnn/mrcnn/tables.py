"""Tables for notebooks and terminals: matterport's ``display_table`` and ``display_weight_stats``.

Re-exported by :mod:`.visualize` under matterport's names. No matplotlib and no TensorFlow
are imported here; ``display_weight_stats`` reads a model that is already built.
"""
import html

import numpy as np

# a weight whose absolute value exceeds this is flagged, as in matterport's notebooks
OVERFLOW_LIMIT = 1000.0
WEIGHT_STATS_HEADER = ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]


def _in_notebook():
    """True inside a running IPython kernel or shell (where HTML can be displayed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def table_html(table):
    """``<table>`` HTML of ``table`` (rows of cells; each cell is ``str()``-ed and escaped)."""
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in table)
    return f"<table>{rows}</table>"


def table_text(table):
    """Plain-text rendering of ``table``: columns left-aligned, separated by two spaces."""
    rows = [[str(cell) for cell in row] for row in table]
    if not rows:
        return ""
    n_cols = max(len(row) for row in rows)
    widths = [max((len(row[c]) for row in rows if c < len(row)), default=0) for c in range(n_cols)]
    return "\n".join("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()
                     for row in rows)


def display_table(table):
    """Show ``table`` (an iterable of rows, each an iterable of cells) and return its HTML.

    Inside IPython / Jupyter the table is displayed as HTML (as matterport does); elsewhere
    (scripts, terminals) it is printed as aligned plain text. Cells are shown with ``str()``;
    HTML special characters are escaped.
    """
    table = [list(row) for row in table]
    markup = table_html(table)
    if _in_notebook():
        from IPython.display import HTML, display
        display(HTML(markup))
    else:
        print(table_text(table))
    return markup


def weight_stats(model):
    """One row per weight array of ``model``: ``[name, shape, min, max, std]`` (formatted).

    ``model``: a :class:`.model.MaskRCNN` (its ``keras_model`` is read) or any built Keras 3
    model; layers of nested sub-models (``rpn_model`` ...) are included, a shared layer once.
    Names are ``<layer name>/<variable name>`` (matterport's legacy weight names). A name ends
    in ``*** dead?`` when all values of a non-bias array are equal, and in ``*** Overflow?``
    when a value's magnitude exceeds :data:`OVERFLOW_LIMIT`. The first row is
    :data:`WEIGHT_STATS_HEADER`.

    Raises:
        TypeError: ``model`` is neither a ``MaskRCNN`` nor a Keras model (no ``layers``).
    """
    keras_model = getattr(model, "keras_model", model)
    if not hasattr(keras_model, "layers"):
        raise TypeError(f"display_weight_stats: expected a MaskRCNN or a Keras model, got "
                        f"{type(model).__name__}")
    from .weights import iter_weighted_layers
    table = [list(WEIGHT_STATS_HEADER)]
    for layer_name, layer in iter_weighted_layers(keras_model):
        for variable in layer.weights:
            values = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
            short = str(variable.name).split("/")[-1].split(":")[0]
            name = f"{layer_name}/{short}"
            low, high = float(values.min()), float(values.max())
            if low == high and short != "bias":
                name += " *** dead?"
            if max(abs(low), abs(high)) > OVERFLOW_LIMIT:
                name += " *** Overflow?"
            table.append([name, str(tuple(values.shape)), f"{low:+9.4f}", f"{high:+10.4f}",
                          f"{float(values.std()):+9.4f}"])
    return table


def display_weight_stats(model):
    """Show min, max and standard deviation of every weight array of ``model``
    (see :func:`weight_stats`) with :func:`display_table`; returns the table rows.

    Raises:
        TypeError: ``model`` is neither a ``MaskRCNN`` nor a Keras model.
    """
    table = weight_stats(model)
    display_table(table)
    return table
