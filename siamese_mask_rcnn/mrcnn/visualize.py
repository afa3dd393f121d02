"""Drawing helpers for detections, masks and one-shot (reference, query) results.

The public names follow matterport's ``mrcnn.visualize`` (``random_colors``,
``apply_mask``, ``draw_box``, ``display_images``, ``display_instances``, ``draw_boxes``,
``display_differences``, ``draw_rois``, ``display_top_masks``, ``plot_precision_recall``,
``plot_overlaps``, and from :mod:`.tables` ``display_table``, ``display_weight_stats``) and add ``display_siamese_instances`` (the paper's
Fig. 5 layout: the query with coloured masks and boxes, the reference image as an
inset in the lower-left corner) and ``save_figure``.

Everything works headless: every ``display_*`` function returns its matplotlib
``Figure`` and only calls ``plt.show()`` when it created the figure itself *and*
matplotlib runs an interactive (windowed) backend. With the Agg backend (servers,
CI, scripts) nothing is shown; save the figure with :func:`save_figure`.

Boxes are ``(y1, x1, y2, x2)`` in image pixels and masks are ``[H, W, N]``
booleans, as everywhere in the library. No TensorFlow is imported here.
"""
import colorsys
import os

import numpy as np

import matplotlib
import matplotlib.pyplot as plt
from matplotlib import lines, patches
from matplotlib.patches import Polygon

from .masks import unmold_mask
from .metrics import compute_matches
from .tables import display_table, display_weight_stats  # noqa: F401  (matterport's names)


############################################################
#  Figure handling
############################################################

def _backend_is_interactive():
    """True when matplotlib runs a windowed backend on which ``plt.show()`` displays."""
    backend = str(matplotlib.get_backend()).lower()
    try:
        from matplotlib.backends import BackendFilter, backend_registry
        interactive = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    except ImportError:  # matplotlib < 3.9
        from matplotlib import rcsetup
        interactive = getattr(rcsetup, "interactive_bk", [])
    return backend in {name.lower() for name in interactive}


def _new_axes(figsize):
    """Create a figure with one axes; returns ``(fig, ax)``."""
    fig, ax = plt.subplots(1, figsize=figsize)
    return fig, ax


def _finish(fig, created, show=None):
    """Show ``fig`` on interactive backends when we created it; return the figure.

    ``show=None`` means "automatic": show only when the figure was created here
    and the backend is interactive. ``show=True``/``False`` force the choice, but
    nothing is ever shown on a non-interactive backend such as Agg.
    """
    if show is None:
        show = created
    if show and _backend_is_interactive():
        plt.show()
    return fig


def save_figure(fig, path, dpi=100, close=False):
    """Write ``fig`` to ``path`` in the format its extension names (``.png``, ``.jpg``,
    ``.pdf``, ``.svg``, ... whatever matplotlib writes; PNG for any other or no extension),
    creating missing parent directories.

    Works without a display (uses the figure's own canvas, whatever the backend).
    Returns the path written. ``close=True`` releases the figure from pyplot.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    file_format = extension if extension in fig.canvas.get_supported_filetypes() else "png"
    fig.savefig(path, format=file_format, dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path


############################################################
#  Colours and masks
############################################################

def random_colors(N, bright=True, seed=None):
    """Return ``N`` visually distinct RGB colours (floats in [0, 1]).

    Colours are evenly spaced hues (brightness 1.0, or 0.7 with ``bright=False``)
    in a shuffled order. ``seed`` makes the order reproducible; without it the
    order is random (a fresh numpy Generator, never the global RNG).
    """
    if N <= 0:
        return []
    value = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / N, 1.0, value) for i in range(N)]
    order = np.random.default_rng(seed).permutation(N)
    return [tuple(float(c) for c in colors[i]) for i in order]


def apply_mask(image, mask, color, alpha=0.5):
    """Blend ``color`` into ``image`` where ``mask`` is set; returns a new array.

    image: [H, W, 3] array (uint8 or float); mask: [H, W] (bool or 0/1);
    color: RGB floats in [0, 1]; alpha: opacity of the colour. Pixels outside the
    mask are returned unchanged. Unlike matterport the input is not modified.

    Raises:
        ValueError: ``image`` is not ``[H, W, 3]`` or ``mask`` is not ``[H, W]`` of the same size.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"apply_mask: image must be [H, W, 3], got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"apply_mask: mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    where = mask.astype(bool)
    out = image.copy()
    blended = image[where].astype(np.float64)
    for c in range(3):
        blended[:, c] = blended[:, c] * (1 - alpha) + alpha * float(color[c]) * 255
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        blended = np.clip(np.round(blended), info.min, info.max)
    out[where] = blended.astype(image.dtype)
    return out


def draw_box(image, box, color):
    """Draw a 2-pixel outline of ``box`` into a copy of ``image``; returns the copy.

    image: [H, W, C] array; box: ``(y1, x1, y2, x2)`` in pixels (``y2``/``x2`` exclusive,
    the outline lies inside the box: rows ``y1, y1+1, y2-2, y2-1`` and the same columns);
    color: C values (e.g. RGB 0-255 for uint8 images). Parts outside the image are
    dropped. Unlike matterport the input is not modified: use the returned array.

    Raises:
        ValueError: ``image`` is not ``[H, W, C]``, ``box`` has not 4 values, or ``color``
            does not have C values.
    """
    out = np.array(image, copy=True)
    if out.ndim != 3:
        raise ValueError(f"draw_box: image must be [H, W, C], got shape {out.shape}")
    if np.asarray(box).shape != (4,):
        raise ValueError(f"draw_box: box must be (y1, x1, y2, x2), got {box!r}")
    if np.asarray(color).shape != (out.shape[2],):
        raise ValueError(f"draw_box: color {color!r} needs {out.shape[2]} values")
    height, width = out.shape[:2]
    y1, x1, y2, x2 = [int(round(float(v))) for v in box]
    if y2 <= y1 or x2 <= x1:
        return out
    color = np.asarray(color)
    for top, bottom, left, right in ((y1, min(y1 + 2, y2), x1, x2), (max(y2 - 2, y1), y2, x1, x2),
                                     (y1, y2, x1, min(x1 + 2, x2)), (y1, y2, max(x2 - 2, x1), x2)):
        top, bottom = max(top, 0), min(bottom, height)
        left, right = max(left, 0), min(right, width)
        if bottom > top and right > left:
            out[top:bottom, left:right] = color
    return out


def _mask_contours(mask):
    """Outline polygons of a binary mask as lists of (x, y) vertices."""
    from skimage.measure import find_contours
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask.astype(np.uint8)
    outlines = []
    for contour in find_contours(padded, 0.5):
        # contour is (row, col) in padded coordinates: drop the padding, swap to (x, y)
        outlines.append(np.fliplr(contour) - 1)
    return outlines


def _as_display_image(image):
    """Convert an image to uint8 RGB for imshow (grey images are repeated)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


############################################################
#  Display functions
############################################################

def display_images(images, titles=None, cols=4, cmap=None, norm=None, interpolation=None):
    """Show a grid of images (``cols`` per row) with optional titles; returns the Figure.

    Raises:
        ValueError: no images, or as many titles as images are not given.
    """
    images = list(images)
    if not images:
        raise ValueError("display_images: no images given")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"display_images: {len(titles)} titles for {len(images)} images")
    cols = max(1, min(int(cols), len(images)))
    rows = (len(images) + cols - 1) // cols
    fig = plt.figure(figsize=(14, 14 * rows / cols))
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        ax = fig.add_subplot(rows, cols, i)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        ax.imshow(image.astype(np.uint8) if image.ndim == 3 else image,
                  cmap=cmap, norm=norm, interpolation=interpolation)
    return _finish(fig, created=True)


def _check_instances(boxes, masks, n, name):
    """Validate that boxes/masks describe ``n`` instances."""
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"{name}: {len(boxes)} boxes for {n} instances")
    if masks is not None and np.asarray(masks).shape[-1] != n:
        raise ValueError(f"{name}: masks have {np.asarray(masks).shape[-1]} channels for {n} instances")


def _draw_box(ax, box, color, linestyle="dashed", alpha=0.7, linewidth=2):
    """Draw a ``(y1, x1, y2, x2)`` rectangle outline on ``ax``."""
    y1, x1, y2, x2 = [float(v) for v in box]
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=linewidth,
                                   alpha=alpha, linestyle=linestyle, edgecolor=color,
                                   facecolor="none"))


def _draw_mask_outline(ax, mask, color):
    """Draw the contour(s) of ``mask`` on ``ax``."""
    for outline in _mask_contours(mask):
        ax.add_patch(Polygon(outline, facecolor="none", edgecolor=color))


def _prepare_canvas(ax, image, title, figsize):
    """Create axes if needed, fix the limits to the image, hide ticks."""
    created = ax is None
    if created:
        fig, ax = _new_axes(figsize)
    else:
        fig = ax.figure
    height, width = np.asarray(image).shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)
    return fig, ax, created


def display_instances(image, boxes, masks, class_ids, class_names, scores=None, title="",
                      figsize=(16, 16), ax=None, show_mask=True, show_bbox=True,
                      colors=None, captions=None):
    """Draw instances (boxes, masks, captions) on ``image``; returns the Figure.

    boxes: [N, 4] ``(y1, x1, y2, x2)``; masks: [H, W, N]; class_ids: [N];
    class_names: list indexed by class id; scores: optional [N];
    captions: optional list of N strings replacing "name score".
    Instances whose box is all zeros are skipped.

    Raises:
        ValueError: ``class_ids`` and ``boxes`` differ in length.
    """
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes)
    n = boxes.shape[0]
    _check_instances(boxes, masks if show_mask else None, n, "display_instances")
    if class_ids is not None and len(class_ids) != n:
        raise ValueError(f"display_instances: {len(class_ids)} class ids for {n} boxes")
    fig, ax, created = _prepare_canvas(ax, image, title, figsize)
    colors = colors or random_colors(n, seed=0)
    canvas = _as_display_image(image).astype(np.uint8)
    for i in range(n):
        if not np.any(boxes[i]):
            continue
        color = colors[i]
        if show_bbox:
            _draw_box(ax, boxes[i], color)
        if captions is not None:
            caption = captions[i]
        else:
            class_id = int(class_ids[i])
            label = class_names[class_id] if class_names is not None and class_id < len(class_names) else str(class_id)
            caption = f"{label} {scores[i]:.3f}" if scores is not None else label
        y1, x1 = float(boxes[i][0]), float(boxes[i][1])
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")
        if show_mask and masks is not None:
            mask = np.asarray(masks)[:, :, i]
            canvas = apply_mask(canvas, mask, color)
            _draw_mask_outline(ax, mask, color)
    ax.imshow(canvas)
    return _finish(fig, created)


def draw_boxes(image, boxes=None, refined_boxes=None, masks=None, captions=None,
               visibilities=None, title="", ax=None):
    """Draw boxes, refined boxes (with a line from the original corner), masks and captions.

    boxes / refined_boxes: [N, 4] ``(y1, x1, y2, x2)`` (either may be None);
    masks: [H, W, N]; captions: N strings; visibilities: N values in {0, 1, 2}
    (0 hidden, 1 faint, 2 fully visible; default 2). With both box sets the
    original boxes are dotted and the refined ones solid. Returns the Figure.

    Raises:
        ValueError: neither ``boxes`` nor ``refined_boxes`` given, or their lengths (or that of ``captions``) differ.
    """
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: give boxes or refined_boxes")
    reference = boxes if boxes is not None else refined_boxes
    n = len(reference)
    if boxes is not None and refined_boxes is not None and len(refined_boxes) != n:
        raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(refined_boxes)} refined boxes")
    _check_instances(None, masks, n, "draw_boxes")
    if captions is not None and len(captions) != n:
        raise ValueError(f"draw_boxes: {len(captions)} captions for {n} boxes")
    fig, ax, created = _prepare_canvas(ax, image, title, (12, 12))
    colors = random_colors(n, seed=0)
    canvas = _as_display_image(image).astype(np.uint8)
    for i in range(n):
        visibility = 2 if visibilities is None else int(visibilities[i])
        if visibility == 0:
            continue
        color = colors[i] if visibility == 2 else (0.5, 0.5, 0.5)
        alpha = 1.0 if visibility == 2 else 0.5
        if boxes is not None:
            style = "dotted" if refined_boxes is not None else "solid"
            _draw_box(ax, boxes[i], color, linestyle=style, alpha=alpha)
        if refined_boxes is not None:
            _draw_box(ax, refined_boxes[i], color, linestyle="solid", alpha=alpha)
            if boxes is not None:
                (y1, x1), (ry1, rx1) = boxes[i][:2], refined_boxes[i][:2]
                ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color, alpha=alpha))
        if captions is not None:
            y1, x1 = [float(v) for v in reference[i][:2]]
            ax.text(x1, y1, captions[i], size=11, verticalalignment="top", color="w",
                    bbox={"facecolor": color, "alpha": 0.5, "pad": 2, "edgecolor": "none"})
        if masks is not None:
            mask = np.asarray(masks)[:, :, i]
            canvas = apply_mask(canvas, mask, color)
            _draw_mask_outline(ax, mask, color)
    ax.imshow(canvas)
    return _finish(fig, created)


def display_differences(image, gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score,
                        pred_mask, class_names, title="", ax=None, show_mask=True, show_box=True,
                        iou_threshold=0.5, score_threshold=0.5):
    """Ground truth (green) and predictions (red) on one image; returns the Figure.

    gt_box: [G, 4] / pred_box: [P, 4] ``(y1, x1, y2, x2)`` pixels; gt_mask: [H, W, G];
    pred_mask: [H, W, P]; gt_class_id: [G]; pred_class_id, pred_score: [P]. All-zero
    (padding) boxes are dropped. Predictions are matched to ground truth as in
    :func:`.metrics.compute_matches` (``iou_threshold``, ``score_threshold``) and drawn in
    descending score order, captioned ``"score / IoU"``: the mask IoU with the matched
    ground-truth instance, or the highest IoU with any instance when unmatched.

    Raises:
        ValueError: a box count differs from its mask, class-id or score count.
    """
    gt_box, pred_box = np.asarray(gt_box).reshape(-1, 4), np.asarray(pred_box).reshape(-1, 4)
    n_gt, n_pred = gt_box.shape[0], pred_box.shape[0]
    _check_instances(gt_box, gt_mask, n_gt, "display_differences (ground truth)")
    _check_instances(pred_box, pred_mask, n_pred, "display_differences (predictions)")
    if len(gt_class_id) != n_gt or len(pred_class_id) != n_pred or len(pred_score) != n_pred:
        raise ValueError(f"display_differences: {n_gt} GT boxes with {len(gt_class_id)} class ids, "
                         f"{n_pred} predicted boxes with {len(pred_class_id)} class ids and "
                         f"{len(pred_score)} scores")
    keep_gt = np.any(gt_box != 0, axis=1)
    keep_pred = np.flatnonzero(np.any(pred_box != 0, axis=1))
    keep_pred = keep_pred[np.argsort(-np.asarray(pred_score)[keep_pred], kind="stable")]
    gt_box, gt_class_id = gt_box[keep_gt], np.asarray(gt_class_id)[keep_gt]
    gt_mask = np.asarray(gt_mask)[..., keep_gt]
    pred_box, pred_class_id = pred_box[keep_pred], np.asarray(pred_class_id)[keep_pred]
    pred_score, pred_mask = np.asarray(pred_score)[keep_pred], np.asarray(pred_mask)[..., keep_pred]
    _, pred_match, overlaps = compute_matches(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id,
                                              pred_score, pred_mask, iou_threshold=iou_threshold,
                                              score_threshold=score_threshold)
    captions = [""] * len(gt_box)
    for i, match in enumerate(pred_match):
        if match > -1:
            iou = overlaps[i, int(match)]
        else:
            iou = overlaps[i].max() if overlaps.shape[1] else 0.0
        captions.append(f"{float(pred_score[i]):.2f} / {float(iou):.2f}")
    colors = [(0.0, 1.0, 0.0)] * len(gt_box) + [(1.0, 0.0, 0.0)] * len(pred_box)
    masks = np.concatenate([gt_mask.astype(bool), pred_mask.astype(bool)], axis=-1)
    return display_instances(image, np.concatenate([gt_box, pred_box]), masks,
                             np.concatenate([gt_class_id, pred_class_id]), class_names,
                             title=title or "Ground Truth and Detections\n GT=green, pred=red, "
                                            "captions: score/IoU",
                             ax=ax, show_mask=show_mask, show_bbox=show_box, colors=colors,
                             captions=captions)


def draw_rois(image, rois, refined_rois, mask, class_ids, class_names, limit=10, seed=None):
    """Show up to ``limit`` training ROIs (picked at random when there are more): each ROI
    dashed; for positive ROIs (class id > 0) also the refined box, a line joining the two
    top-left corners, the class name and the ROI's mask pasted into the image.

    rois, refined_rois: [N, 4] ``(y1, x1, y2, x2)`` pixels; mask: [N, h, w] per-ROI masks
    (values in [0, 1], e.g. ``MASK_SHAPE``); class_ids: [N]. Prints the positive and
    negative ROI counts (as matterport does). ``seed`` fixes the random pick and colours.
    Returns the Figure.

    Raises:
        ValueError: ``rois``, ``refined_rois``, ``mask`` and ``class_ids`` differ in length.
    """
    rois, refined_rois = np.asarray(rois).reshape(-1, 4), np.asarray(refined_rois).reshape(-1, 4)
    class_ids, mask = np.asarray(class_ids).astype(int), np.asarray(mask)
    n = rois.shape[0]
    if not (len(refined_rois) == len(mask) == len(class_ids) == n):
        raise ValueError(f"draw_rois: {n} rois, {len(refined_rois)} refined rois, {len(mask)} masks "
                         f"and {len(class_ids)} class ids")
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(n, limit, replace=False)) if n > limit else np.arange(n)
    title = f"Showing {len(ids)} random ROIs out of {n}" if n > limit else f"{n} ROIs"
    fig, ax, created = _prepare_canvas(None, image, title, (12, 12))
    canvas = _as_display_image(image)
    for i in ids:
        color = tuple(float(c) for c in rng.random(3))
        positive = class_ids[i] > 0
        _draw_box(ax, rois[i], color if positive else "gray", linestyle="dashed",
                  alpha=0.7 if positive else 0.3)
        if positive:
            _draw_box(ax, refined_rois[i], color, linestyle="solid")
            (y1, x1), (ry1, rx1) = rois[i][:2], refined_rois[i][:2]
            ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
            name = class_names[class_ids[i]] if class_ids[i] < len(class_names) else str(class_ids[i])
            ax.text(float(rx1), float(ry1) + 8, name, size=11, color="w")
            full = unmold_mask(mask[i], np.round(rois[i]).astype(np.int32), canvas.shape)
            canvas = apply_mask(canvas, full, color)
    ax.imshow(canvas)
    positives = int(np.sum(class_ids > 0))
    print("Positive ROIs: ", positives)
    print("Negative ROIs: ", n - positives)
    print(f"Positive Ratio: {positives / max(n, 1):.2f}")
    return _finish(fig, created)


def display_top_masks(image, mask, class_ids, class_names, limit=4):
    """The image beside the masks of its ``limit`` classes with the largest mask area.

    mask: [H, W, N]; class_ids: [N]. Each class panel shows its instances labelled 1, 2, ...
    (later instances on top); a panel without a class is empty and titled "-".
    Returns the Figure of :func:`display_images`.

    Raises:
        ValueError: ``mask`` and ``class_ids`` describe different numbers of instances.
    """
    image, mask, class_ids = np.asarray(image), np.asarray(mask), np.asarray(class_ids)
    if mask.shape[-1] != len(class_ids):
        raise ValueError(f"display_top_masks: masks have {mask.shape[-1]} channels for "
                         f"{len(class_ids)} class ids")
    areas = {int(c): float(mask[..., class_ids == c].sum()) for c in np.unique(class_ids)}
    top = [c for c, area in sorted(areas.items(), key=lambda item: -item[1]) if area > 0][:limit]
    panels, titles = [image], [f"H x W={image.shape[0]}x{image.shape[1]}"]
    for k in range(limit):
        labels = np.zeros(mask.shape[:2], dtype=np.int32)
        if k < len(top):
            for rank, channel in enumerate(np.flatnonzero(class_ids == top[k]), start=1):
                labels[mask[..., channel].astype(bool)] = rank
        panels.append(labels)
        titles.append(class_names[top[k]] if k < len(top) else "-")
    return display_images(panels, titles=titles, cols=limit + 1, cmap="Blues_r")


def plot_precision_recall(AP, precisions, recalls):
    """Plot a precision-recall curve titled with its AP; returns the Figure."""
    fig, ax = _new_axes((8, 6))
    ax.set_title(f"Precision-Recall Curve. AP@50 = {float(AP):.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.plot(np.asarray(recalls), np.asarray(precisions))
    return _finish(fig, created=True)


def plot_overlaps(gt_class_ids, pred_class_ids, pred_scores, overlaps, class_names, threshold=0.5):
    """Grid of IoUs between predictions (rows) and ground truth (columns); returns the Figure.

    gt_class_ids: [G]; pred_class_ids, pred_scores: [P]; overlaps: [P', G'] IoUs of the
    non-background (class id != 0) predictions and ground truth, in order. A cell shows its
    IoU and, above ``threshold``, "match" (same class) or "wrong" (other class).

    Raises:
        ValueError: ``overlaps`` does not have one row per prediction and one column per
            ground-truth instance of a real class.
    """
    gt_class_ids, pred_class_ids = np.asarray(gt_class_ids), np.asarray(pred_class_ids)
    pred_scores, overlaps = np.asarray(pred_scores), np.asarray(overlaps, dtype=np.float64)
    pred_scores = pred_scores[pred_class_ids != 0]
    gt_class_ids, pred_class_ids = gt_class_ids[gt_class_ids != 0], pred_class_ids[pred_class_ids != 0]
    if overlaps.shape != (len(pred_class_ids), len(gt_class_ids)):
        raise ValueError(f"plot_overlaps: overlaps shape {overlaps.shape} != "
                         f"({len(pred_class_ids)} predictions, {len(gt_class_ids)} ground truth)")
    fig, ax = _new_axes((12, 10))
    ax.imshow(overlaps, interpolation="nearest", cmap="Blues", vmin=0, vmax=1)
    ax.set_yticks(np.arange(len(pred_class_ids)))
    ax.set_yticklabels([f"{class_names[int(c)]} ({float(s):.2f})" for c, s in zip(pred_class_ids, pred_scores)])
    ax.set_xticks(np.arange(len(gt_class_ids)))
    ax.set_xticklabels([class_names[int(c)] for c in gt_class_ids], rotation=90)
    half = overlaps.max() / 2.0 if overlaps.size else 0.0
    for i in range(overlaps.shape[0]):
        for j in range(overlaps.shape[1]):
            value = overlaps[i, j]
            verdict = ("match" if gt_class_ids[j] == pred_class_ids[i] else "wrong") if value > threshold else ""
            color = "white" if value > half else ("black" if value > 0 else "grey")
            ax.text(j, i, f"{value:.3f}\n{verdict}", ha="center", va="center", fontsize=9, color=color)
    ax.set_xlabel("Ground Truth")
    ax.set_ylabel("Predictions")
    fig.tight_layout()
    return _finish(fig, created=True)



def display_siamese_instances(reference, query, boxes, masks, scores, title="one-shot detections",
                              ax=None, figsize=(12, 12), colors=None, inset_fraction=0.3,
                              show_scores=True, reference_placement="inset"):
    """Fig.-5 style plot: query with coloured masks and boxes, and the reference.

    reference: [h, w, 3] crop; query: [H, W, 3]; boxes: [N, 4] ``(y1, x1, y2, x2)``;
    masks: [H, W, N]; scores: [N] (shown as captions when ``show_scores``).
    ``inset_fraction`` is the reference's longer side relative to the query's
    shorter side. ``reference_placement``: ``"inset"`` (the paper's figure: over the
    query's lower-left corner) or ``"beside"`` (left of the query, hiding none of it).
    Returns the Figure.

    Raises:
        ValueError: ``scores`` and ``boxes`` differ in length, or an unknown
            ``reference_placement``.
    """
    if reference_placement not in ("inset", "beside"):
        raise ValueError(f"display_siamese_instances: reference_placement must be 'inset' or 'beside', "
                         f"got {reference_placement!r}")
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes)
    n = boxes.shape[0]
    _check_instances(boxes, masks, n, "display_siamese_instances")
    if scores is not None and len(scores) != n:
        raise ValueError(f"display_siamese_instances: {len(scores)} scores for {n} boxes")
    query = np.asarray(query)
    fig, ax, created = _prepare_canvas(ax, query, title, figsize)
    ax.set_ylim(query.shape[0], 0)
    ax.set_xlim(0, query.shape[1])
    colors = colors or random_colors(n, seed=0)
    canvas = _as_display_image(query).astype(np.uint8)
    for i in range(n):
        color = colors[i]
        if masks is not None:
            mask = np.asarray(masks)[:, :, i]
            canvas = apply_mask(canvas, mask, color)
            _draw_mask_outline(ax, mask, color)
        _draw_box(ax, boxes[i], color)
        if show_scores and scores is not None:
            # inside the box's top-left corner (va="top"), so a box at the image's top edge
            # keeps its caption on the image; the box colour behind it keeps it legible
            ax.text(float(boxes[i][1]) + 2, float(boxes[i][0]) + 2, f"{float(scores[i]):.2f}",
                    color="w", size=11, va="top", ha="left",
                    bbox=dict(facecolor=color, alpha=0.7, pad=1.5, edgecolor="none"))
    ax.imshow(canvas)
    if reference_placement == "inset":
        _add_reference_inset(ax, reference, query.shape[:2], inset_fraction)
    else:
        _add_reference_beside(ax, reference, query.shape[:2], inset_fraction)
    return _finish(fig, created)


def _scaled_reference(reference, query_shape, fraction):
    """``(display image, width, height)`` of ``reference`` drawn with its longer side
    ``fraction`` of the query's shorter side (query pixels), aspect ratio kept."""
    reference = _as_display_image(reference)
    rh, rw = reference.shape[:2]
    scale = fraction * min(query_shape) / max(rh, rw, 1)
    return reference, rw * scale, rh * scale


def _add_reference_beside(ax, reference, query_shape, fraction):
    """Draw ``reference`` left of the query (data x < 0), bottom-aligned, with a white gap;
    widens the axes' x-limits to show it."""
    reference, width, height = _scaled_reference(reference, query_shape, fraction)
    qh, qw = query_shape
    gap = 0.02 * qw
    ax.imshow(reference, extent=(-gap - width, -gap, qh, qh - height))
    ax.set_xlim(-gap - width, qw)
    ax.set_ylim(qh, 0)


def _add_reference_inset(ax, reference, query_shape, inset_fraction):
    """Place ``reference`` in the lower-left corner of ``ax`` keeping its aspect ratio."""
    reference, width, height = _scaled_reference(reference, query_shape, inset_fraction)
    qh, qw = query_shape
    frac_w, frac_h = width / qw, height / qh
    inset = ax.inset_axes([0.0, 0.0, frac_w, frac_h])
    inset.imshow(reference)
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("white")
        spine.set_linewidth(2)
    return inset
