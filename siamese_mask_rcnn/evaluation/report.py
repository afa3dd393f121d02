"""Reporting an evaluation: the paper's table (Table 2), JSON / CSV files and plots.

:func:`write_outputs` writes everything one evaluation produced (COCO results, numbers,
table, per-category AP50 plots and the optional analyses of :mod:`.analyses`). AP values are
fractions in [0, 1]; tables and plots show percentages. Matplotlib is imported only when a
plot is drawn.
"""
import csv
import json
import math
import pathlib

import numpy as np

from ..mrcnn.fileio import safe_filename

#: Row order of :func:`format_table` (other row labels follow in insertion order).
TABLE_ROW_ORDER = ("background", "one-shot", "random boxes")


############################################################
#  Files and numbers
############################################################


def _jsonable(value):
    """Convert numpy values, tuples and nan to JSON-ready Python values (nan → None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (pathlib.Path,)):
        return str(value)
    return value


def _prepare_path(path):
    """Create the parent folder of ``path``; return it as a ``pathlib.Path``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _csv_number(value):
    """A float for CSV ('' for nan/None)."""
    if value is None:
        return ""
    value = float(value)
    return "" if math.isnan(value) else f"{value:.6f}"


def _write_csv(path, rows):
    """Write ``rows`` (lists, the header first) as CSV to ``path``; returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    path = _prepare_path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_json(data, path):
    """Write ``data`` as JSON (numpy → Python, nan → null); returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    path = _prepare_path(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_jsonable(data), handle, indent=1)
    return path


############################################################
#  Analyses
############################################################


def _finish_figure(fig, path):
    """Lay ``fig`` out and write it to ``path`` (PNG) when given; returns the Figure.

    Raises:
        OSError: ``path`` cannot be written.
    """
    from ..mrcnn.visualize import save_figure  # pyplot only once a plot is drawn
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_confusion(confusion, path=None, title=None):
    """Fig.-7 style plot: the AP50 matrix and, below it, the column sums (false positives).

    Returns the Figure; writes a PNG to ``path`` when given.

    Raises:
        OSError: ``path`` cannot be written.
    """
    import matplotlib.pyplot as plt
    names = confusion["class_names"]
    size = len(names)
    side = max(6.0, 0.35 * size + 3)
    fig, (ax_matrix, ax_sums) = plt.subplots(2, 1, figsize=(side, side * 1.35),
                                             gridspec_kw={"height_ratios": [4, 1]})
    image = ax_matrix.imshow(np.ma.masked_invalid(confusion["matrix"]), vmin=0, vmax=1,
                             cmap="viridis")
    ax_matrix.set_xticks(range(size))
    ax_matrix.set_xticklabels(names, rotation=90, fontsize=8)
    ax_matrix.set_yticks(range(size))
    ax_matrix.set_yticklabels(names, fontsize=8)
    ax_matrix.set_xlabel("evaluated as category j")
    ax_matrix.set_ylabel("reference category i")
    fig.colorbar(image, ax=ax_matrix, label="AP50")
    sums = np.nan_to_num(np.asarray(confusion["column_sums_off_diagonal"], dtype=float))
    ax_sums.bar(range(size), sums)
    ax_sums.set_xticks(range(size))
    ax_sums.set_xticklabels(names, rotation=90, fontsize=8)
    ax_sums.set_ylabel("off-diagonal column sum")
    ax_matrix.set_title(title or f"confusion matrix ({confusion['iou_type']} AP50)")
    return _finish_figure(fig, path)


def write_confusion_csv(confusion, path):
    """Write the matrix as CSV: a header of category names, one row per reference category,
    then the column sums (all, and off-diagonal).

    Raises:
        OSError: the file cannot be written.
    """
    names = confusion["class_names"]
    rows = [["reference \\ evaluated as"] + names]
    rows += [[name] + [_csv_number(v) for v in row] for name, row in zip(names, confusion["matrix"])]
    rows.append(["column sum"] + [_csv_number(v) for v in confusion["column_sums"]])
    rows.append(["column sum (off-diagonal)"] +
                [_csv_number(v) for v in confusion["column_sums_off_diagonal"]])
    return _write_csv(path, rows)


def write_confusion_json(confusion, path):
    """Write the confusion matrix as JSON (nan → null).

    Raises:
        OSError: the file cannot be written.
    """
    return write_json(confusion, path)


def plot_clutter(clutter, path=None, title="effect of clutter"):
    """Fig.-8 style plot of mAP50 (%) against the number of instances; returns the Figure.

    Raises:
        OSError: ``path`` cannot be written.
    """
    import matplotlib.pyplot as plt
    labels = [b["label"] for b in clutter["bins"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for iou_type, name in (("bbox", "detection"), ("segm", "segmentation")):
        values = [100 * b[f"map50_{iou_type}"] for b in clutter["bins"]]
        ax.plot(x, values, marker="o", label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlabel("number of instances in the query image")
    ax.set_ylabel("mAP50 (%)")
    ax.set_title(title)
    ax.legend()
    return _finish_figure(fig, path)


def write_clutter_csv(clutter, path):
    """Write one CSV row per bin: label, min, max, images, detection and segmentation mAP50.

    Raises:
        OSError: the file cannot be written.
    """
    rows = [["instances", "min", "max", "n_images", "map50_bbox", "map50_segm"]]
    rows += [[b["label"], b["min"], "" if b["max"] is None else b["max"], b["n_images"],
              _csv_number(b["map50_bbox"]), _csv_number(b["map50_segm"])]
             for b in clutter["bins"]]
    return _write_csv(path, rows)


def write_absent_csv(absent, path):
    """Write the per-category false-positive statistics of :func:`absent_category_test`.

    Raises:
        OSError: the file cannot be written.
    """
    rows = [["class_id", "name", "n_queries", "false_positives", "mean_per_query",
             "fraction_queries_with_false_positive"]]
    rows += [[class_id, s["name"], s["n_queries"], s["false_positives"],
              _csv_number(s["mean_per_query"]), _csv_number(s["fraction_queries_with_false_positive"])]
             for class_id, s in absent["per_category"].items()]
    return _write_csv(path, rows)


############################################################
#  Tables
############################################################


def _row_numbers(entry):
    """``(bbox, bbox_ci, segm, segm_ci)`` of an :func:`evaluate` / :func:`evaluate_runs` dict."""
    return (entry.get("map50_bbox", float("nan")), entry.get("ci95_bbox"),
            entry.get("map50_segm", float("nan")), entry.get("ci95_segm"))


def _percent(value, ci=None):
    """``'37.6'`` or ``'37.6 ± 0.3'`` from fractions; ``'n/a'`` for nan/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
        text += f" ± {100 * ci:.1f}"
    return text


def _ordered_rows(summary):
    """Row labels: the paper's order first, then the others as given."""
    known = [label for label in TABLE_ROW_ORDER if label in summary]
    return known + [label for label in summary if label not in TABLE_ROW_ORDER]


def format_table(summary, title=None):
    """Text table in the paper's layout (Table 2): one row per evaluated setting (background,
    one-shot, random boxes, ...), columns detection and segmentation mAP50 in % (± the 95%
    interval when several runs were made).

    ``summary`` maps a row label to an :func:`evaluate` or :func:`evaluate_runs` dict (or any
    dict with ``map50_bbox``/``map50_segm`` and optional ``ci95_bbox``/``ci95_segm``).
    """
    header = ("", "detection mAP50 (%)", "segmentation mAP50 (%)")
    rows = []
    for label in _ordered_rows(summary):
        bbox, bbox_ci, segm, segm_ci = _row_numbers(summary[label])
        rows.append((label, _percent(bbox, bbox_ci), _percent(segm, segm_ci)))
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(3)]
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}")
    lines.append("-" * (widths[0] + widths[1] + widths[2] + 4))
    for label, bbox, segm in rows:
        lines.append(f"{label:<{widths[0]}}  {bbox:>{widths[1]}}  {segm:>{widths[2]}}")
    return "\n".join(lines) + "\n"


def _slug(label):
    """A file-name-safe version of a row label."""
    return safe_filename(str(label).lower(), keep="a-z0-9", default="row")


def _evaluations_of(entry):
    """The :func:`evaluate` dicts inside an entry (one, or one per run)."""
    return entry["evaluations"] if "evaluations" in entry else [entry]


def summarize(entry):
    """The JSON-ready numbers of an :func:`evaluate` / :func:`evaluate_runs` dict (no
    results, no pycocotools objects, no per-pair reference info)."""
    skip = {"results", "source_results", "coco_gt", "pairs", "evaluations"}
    numbers = {k: v for k, v in entry.items() if k not in skip}
    if "evaluations" in entry:
        numbers["skipped"] = entry["evaluations"][0].get("skipped", [])
    return _jsonable(numbers)


def plot_per_category(entry, path=None, title="AP50 per category"):
    """Bar plot of per-category AP50 (%), detection and segmentation; returns the Figure.

    Raises:
        OSError: ``path`` cannot be written.
    """
    import matplotlib.pyplot as plt
    names = entry["class_names"]
    ids = sorted(set(entry["ap50_bbox"]) | set(entry["ap50_segm"]))
    x = np.arange(len(ids))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(ids) + 2), 4.5))
    ax.bar(x - 0.2, [100 * entry["ap50_bbox"].get(c, np.nan) for c in ids], 0.4,
           label="detection")
    ax.bar(x + 0.2, [100 * entry["ap50_segm"].get(c, np.nan) for c in ids], 0.4,
           label="segmentation")
    ax.set_xticks(x)
    ax.set_xticklabels([names.get(c, str(c)) for c in ids], rotation=90, fontsize=8)
    ax.set_ylabel("AP50 (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend()
    return _finish_figure(fig, path)


def write_outputs(out_dir, summary, confusion=None, clutter=None, absent=None, config=None,
                  title=None, errors=None):
    """Write everything an evaluation produced to ``out_dir``; returns ``{name: path}``.

    * ``results_<row>_seed<S>.json``: the COCO results (RLE masks) of every run of every row,
      in the annotation file's own image and category ids (``source_results``; plain
      pycocotools scores them against that file, with ``catIds`` / ``imgIds`` set to the
      row's ``source_category_ids`` / ``source_image_ids`` in ``summary.json``);
    * ``summary.json``: the numbers of every row (+ ``config``), ``table.txt``: the table;
    * ``ap50_<row>.png``: per-category AP50;
    * optional ``confusion.{png,csv,json}``, ``clutter.{png,csv,json}``, ``absent.{json,csv}``,
      ``errors.json`` (an :func:`.analyses.error_breakdown` result).

    Raises:
        OSError: ``out_dir`` or a file in it cannot be written.
        KeyError: a row lacks the numbers of :func:`evaluate` / :func:`evaluate_runs`.
    """
    import matplotlib.pyplot as plt
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for label in _ordered_rows(summary):
        entry = summary[label]
        for evaluation in _evaluations_of(entry):
            name = f"results_{_slug(label)}_seed{evaluation['seed']}"
            results = evaluation.get("source_results", evaluation["results"])
            written[name] = write_json(results, out_dir / f"{name}.json")
        fig = plot_per_category(entry, out_dir / f"ap50_{_slug(label)}.png",
                                title=f"AP50 per category: {label}")
        plt.close(fig)
        written[f"ap50_{_slug(label)}"] = out_dir / f"ap50_{_slug(label)}.png"
    numbers = {"config": _jsonable(config or {}),
               "rows": {label: summarize(summary[label]) for label in _ordered_rows(summary)}}
    written["summary"] = write_json(numbers, out_dir / "summary.json")
    table_path = out_dir / "table.txt"
    table_path.write_text(format_table(summary, title=title), encoding="utf-8")
    written["table"] = table_path
    analyses = (("confusion", confusion, plot_confusion, write_confusion_csv, write_confusion_json),
                ("clutter", clutter, plot_clutter, write_clutter_csv, write_json))
    for name, analysis, plot, write_csv, write_numbers in analyses:
        if analysis is None:
            continue
        plt.close(plot(analysis, out_dir / f"{name}.png"))
        written[f"{name}_png"] = out_dir / f"{name}.png"
        written[f"{name}_csv"] = write_csv(analysis, out_dir / f"{name}.csv")
        written[f"{name}_json"] = write_numbers(analysis, out_dir / f"{name}.json")
    if absent is not None:
        written["absent_json"] = write_json(absent, out_dir / "absent.json")
        written["absent_csv"] = write_absent_csv(absent, out_dir / "absent.csv")
    if errors is not None:
        written["errors_json"] = write_json(errors, out_dir / "errors.json")
    return {k: pathlib.Path(v) for k, v in written.items()}
