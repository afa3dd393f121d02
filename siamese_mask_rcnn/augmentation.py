"""Independent photometric and geometric augmentation of query and reference (beyond the paper).

The paper trains without augmentation (Section 5.1). A model that should find "what looks
like the reference" in images it has never seen may benefit from seeing the query and the
reference under *different* photometric and geometric conditions, so that it matches the
object rather than the rendering. :class:`PairAugmentation` draws one albumentations
transform for the query (image and instance masks move together) and one for each reference
crop, each seeded by its own draw from the training example's ``numpy.random.Generator``:
the reference's brightness, colour, noise, blur, rotation, scale and shear are independent of
the query's.

Opt in with the config setting ``PAIR_AUGMENTATION = True`` (default False: the paper's
training, and the random stream of a training example stays exactly as without this module).

Albumentations is imported only when a transform is built (``NO_ALBUMENTATIONS_UPDATE=1``
is set by the package to skip its update check). This module does not import TensorFlow.
"""
import threading

import numpy as np

from .mrcnn.targets import apply_augmentation


def photometric_geometric(rotate=20.0, scale=(0.8, 1.2), shear=8.0, translate=0.05):
    """An albumentations ``Compose`` of shape-preserving geometric and photometric transforms.

    Geometric (probability 0.7): ``Affine`` with rotation ``+-rotate`` degrees, scale
    ``scale``, shear ``+-shear`` degrees and translation ``+-translate`` of the image side
    (zero fill, masks nearest-neighbour). Photometric: colour jitter (brightness, contrast,
    saturation +-30 %, hue +-0.08), gamma 70-150 %, Gaussian noise, Gaussian blur, JPEG
    quality 40-95, grey-scale (5 %).
    """
    import albumentations as A

    return A.Compose([
        A.Affine(scale=scale, rotate=(-rotate, rotate), shear=(-shear, shear),
                 translate_percent=(-translate, translate), border_mode=0, fill=0, fill_mask=0, p=0.7),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.08, p=0.8),
        A.RandomGamma(gamma_limit=(70, 150), p=0.3),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=0.2),
        A.ImageCompression(quality_range=(40, 95), p=0.3),
        A.ToGray(p=0.05),
    ])


class PairAugmentation:
    """Independent augmentation of a training pair's query and references.

    Args:
        query: a function returning the albumentations transform of the query (image and
            masks); default :func:`photometric_geometric`.
        reference: a function returning the transform of each reference crop; default
            :func:`photometric_geometric`.

    Every thread builds its own pair of transforms (the data pipeline's workers are
    threads, and a transform is seeded just before it runs), so no random state is shared
    between threads or between query and reference.
    """

    def __init__(self, query=None, reference=None):
        self._factories = (query or photometric_geometric, reference or photometric_geometric)
        self._local = threading.local()

    def __getstate__(self):
        return {"_factories": self._factories}

    def __setstate__(self, state):
        self._factories = state["_factories"]
        self._local = threading.local()

    def _transforms(self):
        if not hasattr(self._local, "pair"):
            self._local.pair = (self._factories[0](), self._factories[1]())
        return self._local.pair

    @property
    def query_transform(self):
        """This thread's query transform."""
        return self._transforms()[0]

    @property
    def reference_transform(self):
        """This thread's reference transform."""
        return self._transforms()[1]

    def augment_query(self, image, masks, rng):
        """The query ``uint8 [H, W, 3]`` and its masks ``[H, W, N]`` under one random draw
        seeded from ``rng`` (same shapes; see ``mrcnn.targets.apply_augmentation``)."""
        return apply_augmentation(self.query_transform, image, masks, rng=rng)

    def augment_references(self, crops, rng):
        """Each reference crop (``uint8 [h, w, 3]``, any size) under its own random draw,
        each seeded by a separate draw from ``rng``. Returns a list of uint8 crops of the
        same sizes."""
        out = []
        for crop in crops:
            crop = np.ascontiguousarray(np.asarray(crop, dtype=np.uint8))
            self.reference_transform.set_random_seed(int(rng.integers(0, 2 ** 31 - 1)))
            out.append(np.asarray(self.reference_transform(image=crop)["image"], dtype=np.uint8))
        return out


def pair_augmentation_for(config):
    """A :class:`PairAugmentation` when ``config.PAIR_AUGMENTATION`` is true, else None."""
    return PairAugmentation() if getattr(config, "PAIR_AUGMENTATION", False) else None
