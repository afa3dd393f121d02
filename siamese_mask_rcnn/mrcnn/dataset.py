"""matterport's ``Dataset`` base class: classes and images registered by source (no TensorFlow)."""
import logging

import numpy as np

from .image_io import read_image

logger = logging.getLogger(__name__)


def _clean_name(name):
    """Short display name of a class: the text before the first comma."""
    return name.split(",")[0]


class Dataset:
    """Base class for datasets: register classes and images, then ``prepare()``.

    Sub-class it and add ``load_<name>()`` methods that call :meth:`add_class`
    and :meth:`add_image`; override :meth:`load_mask` (and optionally
    :meth:`load_image` and :meth:`image_reference`).

    Class id 0 is the background class ``"BG"`` of source ``""``.
    """

    def __init__(self, class_map=None):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class.
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}
        self.class_map = class_map

    def add_class(self, source, class_id, class_name):
        """Register class ``class_id`` of ``source`` (ignored if already registered).

        Raises:
            ValueError: ``source`` contains a dot (``source.id`` keys would be ambiguous).
        """
        if "." in source:
            raise ValueError(f"Source name cannot contain a dot: '{source}'")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image; extra keyword arguments are stored in its info dict."""
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def image_reference(self, image_id):
        """Link or description of the image for debugging; override in sub-classes."""
        return ""

    def prepare(self, class_map=None):
        """Build the internal look-up tables; call after adding classes and images.

        Sets ``num_classes``, ``class_ids``, ``class_names``, ``num_images``,
        ``_image_ids``, ``class_from_source_map`` ("source.id" -> internal id),
        ``image_from_source_map``, ``sources`` and ``source_class_ids``
        (source -> internal class ids, background included in every source).
        """
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": class_id
            for info, class_id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": image_id
            for info, image_id in zip(self.image_info, self._image_ids)}

        self.sources = sorted(set(c["source"] for c in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or info["source"] == source]

    def map_source_class_id(self, source_class_id):
        """Internal class id of a ``"source.class_id"`` string, e.g. ``"coco.12"``.

        Raises:
            KeyError: ``source_class_id`` (``"source.id"``) was never added with :meth:`add_class`.
        """
        try:
            return self.class_from_source_map[source_class_id]
        except KeyError:
            raise KeyError(f"Unknown source class id '{source_class_id}'") from None

    def get_source_class_id(self, class_id, source):
        """Class id in ``source``'s own numbering of internal class ``class_id``.

        Raises:
            ValueError: class ``class_id`` belongs to another source.
        """
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(
                f"Class {class_id} belongs to source '{info['source']}', not '{source}'")
        return info["id"]

    @property
    def image_ids(self):
        """Internal image ids ``0 .. num_images-1`` (after :meth:`prepare`)."""
        return self._image_ids

    def source_image_link(self, image_id):
        """Path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id):
        """Load image ``image_id`` as a uint8 ``[H, W, 3]`` RGB array.

        Raises:
            ImageLoadError: the file is missing or cannot be decoded (path named).
        """
        path = self.image_info[image_id]["path"]
        return read_image(path)

    def load_mask(self, image_id):
        """Instance masks ``[H, W, N]`` bool and class ids ``[N]``; override this.

        The default returns empty arrays and logs a warning, as matterport does.
        """
        logger.warning("You are using the default load_mask(); define your own in your Dataset.")
        mask = np.empty([0, 0, 0], dtype=bool)
        class_ids = np.empty([0], np.int32)
        return mask, class_ids
