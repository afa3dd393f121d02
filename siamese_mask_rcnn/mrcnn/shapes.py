"""A toy dataset of coloured squares, circles and triangles (generated, in memory).

Used to check that the Mask R-CNN core learns: it trains in minutes on a CPU. Each image
has a plain random background and 1-4 non-overlapping shapes with exact masks.
"""
import numpy as np
from skimage import draw

from .dataset import Dataset

SHAPES = ("square", "circle", "triangle")


def random_shape_specs(rng, height, width, max_shapes=4):
    """Random ``(shape, colour, (cy, cx, size))`` tuples whose boxes do not overlap."""
    specs, boxes = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1)) * 4):
        if len(specs) >= max_shapes:
            break
        size = int(rng.integers(height // 10, height // 5))
        cy = int(rng.integers(size + 2, height - size - 2))
        cx = int(rng.integers(size + 2, width - size - 2))
        box = (cy - size, cx - size, cy + size, cx + size)
        if any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in boxes):
            continue
        boxes.append(box)
        colour = tuple(int(v) for v in rng.integers(60, 256, 3))
        specs.append((SHAPES[int(rng.integers(len(SHAPES)))], colour, (cy, cx, size)))
    return specs


def shape_mask(shape, dims, height, width):
    """Boolean mask of one shape centred at ``(cy, cx)`` with half-size ``size``."""
    cy, cx, s = dims
    mask = np.zeros((height, width), bool)
    if shape == "square":
        mask[cy - s:cy + s, cx - s:cx + s] = True
    elif shape == "circle":
        rr, cc = draw.disk((cy, cx), s, shape=(height, width))
        mask[rr, cc] = True
    else:
        rr, cc = draw.polygon([cy - s, cy + s, cy + s], [cx, cx - s, cx + s], shape=(height, width))
        mask[rr, cc] = True
    return mask


class ShapesDataset(Dataset):
    """``count`` random images of ``height`` × ``width`` with squares, circles, triangles."""

    def __init__(self, count, height=128, width=128, seed=0):
        super().__init__()
        for i, name in enumerate(SHAPES, start=1):
            self.add_class("shapes", i, name)
        rng = np.random.default_rng(seed)
        for i in range(count):
            background = tuple(int(v) for v in rng.integers(0, 60, 3))
            self.add_image("shapes", image_id=i, path=None, width=width, height=height,
                           background=background, shapes=random_shape_specs(rng, height, width))
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.empty((info["height"], info["width"], 3), np.uint8)
        image[:] = info["background"]
        for shape, colour, dims in info["shapes"]:
            image[shape_mask(shape, dims, info["height"], info["width"])] = colour
        return image

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        h, w = info["height"], info["width"]
        masks = np.stack([shape_mask(s, d, h, w) for s, _, d in info["shapes"]], axis=-1)
        class_ids = np.array([self.class_names.index(s) for s, _, _ in info["shapes"]], np.int32)
        return masks, class_ids
