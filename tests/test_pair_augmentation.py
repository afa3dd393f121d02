"""Independent query / reference augmentation (``PAIR_AUGMENTATION``, beyond the paper)."""
import numpy as np
import pytest

from siamese_mask_rcnn.augmentation import PairAugmentation, pair_augmentation_for, photometric_geometric
from siamese_mask_rcnn.config import siamese_config


def _grey(size):
    return np.full((size, size, 3), 128, dtype=np.uint8)


def _brightness_changes(augment, draws=120):
    """Per draw: the mean-brightness change of the query and of the reference."""
    rng = np.random.default_rng(0)
    query, reference = [], []
    for _ in range(draws):
        image, _ = augment.augment_query(_grey(48), np.zeros((48, 48, 0), bool), rng)
        crop = augment.augment_references([_grey(24)], rng)[0]
        query.append(image[12:36, 12:36].mean() - 128)
        reference.append(crop[6:18, 6:18].mean() - 128)
    return np.asarray(query), np.asarray(reference)


def test_reference_and_query_draws_are_independent():
    """The query's and the reference's photometric changes are uncorrelated, while each
    changes a lot; the same check on a pair seeded alike (the control) is correlated."""
    query, reference = _brightness_changes(PairAugmentation())
    assert query.std() > 5 and reference.std() > 5
    assert abs(np.corrcoef(query, reference)[0, 1]) < 0.3

    class SameSeed(PairAugmentation):
        """Control: the reference re-uses the query's seed."""

        def augment_query(self, image, masks, rng):
            self.seed = int(rng.integers(0, 2 ** 31 - 1))
            self.query_transform.set_random_seed(self.seed)
            return np.asarray(self.query_transform(image=image)["image"]), masks

        def augment_references(self, crops, rng):
            self.reference_transform.set_random_seed(self.seed)
            return [np.asarray(self.reference_transform(image=c)["image"]) for c in crops]

    query, reference = _brightness_changes(SameSeed())
    assert np.corrcoef(query, reference)[0, 1] > 0.8


def test_query_masks_follow_the_geometric_transform():
    """A white square's mask still covers the white pixels after the query's transform."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 24:44] = 255
    masks = np.zeros((64, 64, 1), bool)
    masks[20:40, 24:44, 0] = True
    augment = PairAugmentation(query=lambda: photometric_geometric(rotate=30, translate=0.1))
    rng = np.random.default_rng(3)
    moved = 0
    for _ in range(10):
        out, out_masks = augment.augment_query(image, masks, rng)
        assert out.shape == image.shape and out_masks.shape == masks.shape
        inside = out[out_masks[:, :, 0]].mean()
        outside = out[~out_masks[:, :, 0]].mean()
        assert inside > outside + 60, (inside, outside)
        moved += not np.array_equal(out_masks, masks)
    assert moved >= 3


def test_same_generator_state_gives_the_same_augmentation():
    a = PairAugmentation().augment_references([_grey(24)] * 3, np.random.default_rng(7))
    b = PairAugmentation().augment_references([_grey(24)] * 3, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(a[0], x) for x in a[1:])  # each crop its own draw


def test_pair_augmentation_is_opt_in():
    assert siamese_config("tiny").PAIR_AUGMENTATION is False
    assert pair_augmentation_for(siamese_config("tiny")) is None
    assert isinstance(pair_augmentation_for(siamese_config("tiny", PAIR_AUGMENTATION=True)),
                      PairAugmentation)


def test_training_example_with_pair_augmentation():
    """Off: the same generator state gives the same example; on: the references and the
    query change, the shapes stay."""
    from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    dataset = SyntheticOneShotDataset(num_categories=8, num_images=4, image_size=64)

    def example(pair_augmentation):
        config = siamese_config("tiny", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64,
                                PAIR_AUGMENTATION=pair_augmentation)
        model = SiameseMaskRCNN.__new__(SiameseMaskRCNN)  # the data path needs no network
        model.config = config
        return model.load_training_example(dataset, 0, np.random.default_rng(5))

    plain, again, augmented = example(False), example(False), example(True)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))
    assert [np.shape(a) for a in plain] == [np.shape(a) for a in augmented]
    assert not np.array_equal(plain[0], augmented[0])    # query pixels
    assert not np.array_equal(plain[-1], augmented[-1])  # molded references
