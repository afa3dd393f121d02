"""Predictors made from the ground truth: a sanity check and the random-boxes baseline
(paper §5.3). Both follow the ``predict_fn`` interface of :mod:`.predictions`.
"""
import hashlib
import math
import warnings

import numpy as np

from ..cocoformat import box_xywh_to_yxyx


def _gt_instances(coco, image_id, class_id):
    """Non-crowd GT annotations of one category in one image (from a COCO object)."""
    ann_ids = coco.getAnnIds(imgIds=[int(image_id)], catIds=[int(class_id)], iscrowd=False)
    return [ann for ann in coco.loadAnns(ann_ids) if not ann.get("iscrowd", 0)]


class _GroundTruthLookup:
    """Finds the dataset image id of a query and its ground-truth instances.

    The baselines are plain predict_fns: :func:`run_predictions` passes them the query's
    ``image_id``; when called with pixels only they identify the image by its content
    (each dataset image is loaded and hashed at most once).
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.coco = dataset.coco_gt()
        self._by_hash = {}
        self._unscanned = iter([int(i) for i in dataset.image_ids])

    @staticmethod
    def _key(image):
        """Shape and SHA-1 of an image's pixels."""
        image = np.ascontiguousarray(image)
        return tuple(image.shape), hashlib.sha1(image.tobytes()).hexdigest()

    def image_id(self, image):
        """The id of the dataset image whose pixels equal ``image``."""
        key = self._key(image)
        while key not in self._by_hash:
            candidate = next(self._unscanned, None)
            if candidate is None:
                raise ValueError("the query image is not an image of the dataset: the "
                                 "ground-truth baselines only work on dataset images")
            self._by_hash[self._key(self.dataset.load_image(candidate))] = candidate
        return self._by_hash[key]

    def instances(self, image_id, class_id):
        """Float boxes ``(y1, x1, y2, x2)`` and bool masks ``[H, W, n]`` of the non-crowd
        GT instances of one category in one image."""
        image_info = self.coco.imgs[int(image_id)]
        height, width = int(image_info["height"]), int(image_info["width"])
        anns = _gt_instances(self.coco, image_id, class_id)
        rois = np.array([box_xywh_to_yxyx(a["bbox"]) for a in anns],
                        dtype=np.float64).reshape(-1, 4)
        masks = np.zeros((height, width, len(anns)), dtype=bool)
        with warnings.catch_warnings():
            # pycocotools' decode triggers a numpy 2 DeprecationWarning about __array__
            warnings.simplefilter("ignore", DeprecationWarning)
            for k, ann in enumerate(anns):
                masks[:, :, k] = self.coco.annToMask(ann).astype(bool)
        return rois, masks


def _lookup_predictor(dataset, detections_of):
    """A predict_fn answering every category of ``references`` with
    ``detections_of(image_id, class_id, rois, masks)`` of its non-crowd ground truth
    (the reference crops are ignored)."""
    lookup = _GroundTruthLookup(dataset)

    def predict(image, references, image_id=None):
        """Detections made from the ground truth of every category in ``references``."""
        image_id = lookup.image_id(image) if image_id is None else int(image_id)
        return {class_id: detections_of(image_id, class_id, *lookup.instances(image_id, class_id))
                for class_id in references}

    return predict


def ground_truth_predictor(dataset):
    """A predict_fn returning the ground-truth instances of each requested category.

    Boxes are the annotations' exact (float) boxes, masks the annotations' masks,
    scores 1. Run through :func:`evaluate` it must give AP50 = 1 for every category with
    ground truth: a check of the whole evaluation path.

    Raises:
        ValueError: (from the returned predict_fn) called without ``image_id`` on an
            image that is not one of the dataset's.
    """
    def exact(image_id, class_id, rois, masks):
        """The ground truth itself, scored 1."""
        return {"rois": rois, "scores": np.ones((rois.shape[0],)), "masks": masks}

    return _lookup_predictor(dataset, exact)


def _shift_instance(box, mask, rng):
    """Move one instance (float box and its mask) to a uniformly random place inside the
    image, by a whole number of pixels; returns the new box and mask."""
    height, width = mask.shape
    y1, x1, y2, x2 = (float(v) for v in box)
    top, left = max(0, int(math.floor(y1))), max(0, int(math.floor(x1)))
    bottom, right = min(height, int(math.ceil(y2))), min(width, int(math.ceil(x2)))
    box_h, box_w = max(bottom - top, 0), max(right - left, 0)
    new_top = int(rng.integers(0, height - box_h + 1))
    new_left = int(rng.integers(0, width - box_w + 1))
    dy, dx = new_top - top, new_left - left
    moved = np.zeros_like(mask)
    moved[new_top:new_top + box_h, new_left:new_left + box_w] = mask[top:bottom, left:right]
    return np.array([y1 + dy, x1 + dx, y2 + dy, x2 + dx]), moved


def random_boxes_predictor(dataset, seed=0):
    """The random-boxes baseline (paper §5.3) as a predict_fn.

    For the requested category: its ground-truth boxes and masks, each box shifted to a
    uniformly random position inside the image with its mask moved along, scores uniform
    in [0.8, 1]. The draws depend only on ``(seed, image_id, class_id)``, so results do not
    depend on the order of the calls.

    Raises:
        ValueError: (from the returned predict_fn) called without ``image_id`` on an
            image that is not one of the dataset's.
    """
    def shifted(image_id, class_id, rois, masks):
        """The ground truth moved to random places, scored uniformly in [0.8, 1]."""
        rng = np.random.default_rng([int(seed), int(image_id), int(class_id)])
        scores = np.zeros((rois.shape[0],))
        for k in range(rois.shape[0]):
            rois[k], masks[:, :, k] = _shift_instance(rois[k], masks[:, :, k], rng)
            scores[k] = rng.uniform(0.8, 1.0)
        return {"rois": rois, "scores": scores, "masks": masks}

    return _lookup_predictor(dataset, shifted)
