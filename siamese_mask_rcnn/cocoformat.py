"""The COCO format in one place: RLE masks, box layouts, in-memory ground truth, results.

Everything the package reads or writes in COCO's format goes through this module:

* :func:`encode_mask` / :func:`encode_mask_with_box`: a bool mask ``[H, W]`` as COCO
  run-length encoding (``{"size": [H, W], "counts": str}``, JSON-ready), optionally with
  its pixel area and tight box;
* :func:`box_yxyx_to_xywh` / :func:`box_xywh_to_yxyx`: the package's ``(y1, x1, y2, x2)``
  boxes and COCO's ``[x, y, width, height]``, both in image pixels;
* :func:`coco_from_dict`: a ``pycocotools.coco.COCO`` object built in memory without
  pycocotools' prints; :func:`load_results`: ``COCO.loadRes`` that accepts an empty list;
* :func:`quiet`: a context silencing pycocotools' prints.

The evaluation (paper §5.2) scores results in this format with pycocotools' ``COCOeval``.
No TensorFlow is imported here.
"""
import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

#: The two kinds of COCO results the evaluation scores: boxes and masks.
IOU_TYPES = ("bbox", "segm")


@contextlib.contextmanager
def quiet(verbose=False):
    """Silence pycocotools' prints (stdout) inside the block unless ``verbose``."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def encode_mask(mask):
    """COCO RLE of one mask, ready for JSON.

    Args:
        mask: ``[H, W]`` array, nonzero = inside (bool or integer).

    Returns:
        ``{"size": [H, W], "counts": str}`` (``counts`` is COCO's compressed string).

    Raises:
        ValueError: ``mask`` is not two-dimensional.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask to encode must have shape [H, W], got {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_mask_with_box(mask):
    """``(rle, area, bbox)`` of one mask: :func:`encode_mask`'s RLE, the number of pixels
    inside and the tight COCO box ``[x, y, width, height]`` in pixels (all 0 when empty).

    Raises:
        ValueError: ``mask`` is not two-dimensional.
    """
    rle = encode_mask(mask)
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return rle, area, bbox


def box_yxyx_to_xywh(box):
    """``(y1, x1, y2, x2)`` → COCO ``[x, y, width, height]`` (same units, pixels)."""
    y1, x1, y2, x2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def box_xywh_to_yxyx(bbox):
    """COCO ``[x, y, width, height]`` → ``[y1, x1, y2, x2]`` as floats (pixels)."""
    x, y, w, h = (float(v) for v in bbox)
    return [y, x, y + h, x + w]


def coco_from_dict(data, verbose=False):
    """A ``pycocotools.coco.COCO`` built in memory from a COCO-format dict (``images``,
    ``categories``, ``annotations``), its index created without prints unless ``verbose``.

    Raises:
        KeyError: an annotation or image lacks a field pycocotools indexes (``id``,
            ``image_id``, ``category_id``).
    """
    coco = COCO()
    coco.dataset = data
    with quiet(verbose):
        coco.createIndex()
    return coco


def load_results(coco_gt, results, iou_type, verbose=False):
    """``coco_gt.loadRes`` on copies of ``results`` (pycocotools edits them in place).

    ``results`` are COCO result dicts (``image_id``, ``category_id``, ``bbox`` [x, y, w, h]
    pixels, ``score`` and, for masks, ``segmentation`` RLE). An empty list gives an empty
    detection set instead of pycocotools' ``IndexError``; for ``"bbox"`` the masks are
    dropped so pycocotools does not carry them around.

    Raises:
        ValueError: ``iou_type`` is not ``"bbox"`` or ``"segm"``; results refer to image
            ids missing from ``coco_gt`` (named); ``"segm"`` results lack a segmentation.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"results refer to image ids missing from the ground truth: "
                         f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    if not results:
        return coco_from_dict({"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset.get("categories", [])),
                               "annotations": []}, verbose)
    if iou_type == "segm":
        missing = sum("segmentation" not in r for r in results)
        if missing:
            raise ValueError(f"{missing} results have no segmentation; cannot evaluate masks")
        copies = [dict(r) for r in results]
    else:
        copies = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with quiet(verbose):
        return coco_gt.loadRes(copies)
