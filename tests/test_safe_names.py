"""Names from datasets are made safe before they become part of a path (issue: bad input)."""
import numpy as np
import pytest

from siamese_mask_rcnn.mrcnn.fileio import safe_filename


@pytest.mark.parametrize("name, expected", [
    ("Korean/character13", "Korean_character13"),          # Omniglot: a '/' made a sub-folder
    ("a\\\\b", "a_b"), ("C:\\\\x", "C_x"), ("../../etc/passwd", "etc_passwd"), ("..", "unnamed"),
    (".hidden", "hidden"), ("traffic light", "traffic_light"), ("tab\\tnew\\nline", "tab_new_line"),
    ("", "unnamed"), ("   ", "unnamed"), ("dog", "dog"), ("hair drier", "hair_drier"), ("x" * 300, "x" * 100),
    ("nul\\x00byte", "nul_byte"), ("Ω/ß", "unnamed"), (42, "42"),
])
def test_safe_filename(name, expected):
    result = safe_filename(name.encode().decode("unicode_escape") if isinstance(name, str) else name)
    assert result == expected
    assert "/" not in result and "\\\\" not in result and not result.startswith(".")


class _Dataset:
    """Two one-shot categories whose names are not safe file names."""
    image_ids = [0, 1]
    image_categories = {0: [1], 1: [2]}
    class_names = ["BG", "Korean/character13", "../../up"]

    def sample_reference(self, class_id, rng, exclude_image_id=None):
        return np.full((8, 8, 3), 100, np.uint8)

    def load_image(self, image_id):
        return np.zeros((32, 32, 3), np.uint8)


class _Model:
    def embed_category(self, references):
        return None

    def detect_embeddings(self, image, embeddings):
        (class_id,) = embeddings
        masks = np.zeros((32, 32, 1), bool)
        masks[4:10, 4:10] = True
        return {class_id: {"rois": np.array([[4, 4, 10, 10]]), "scores": np.array([0.9]), "masks": masks}}


def test_demo_example_pictures_stay_in_their_folder(tmp_path):
    from siamese_mask_rcnn.demo import save_examples

    out = tmp_path / "examples"
    paths = save_examples(_Model(), _Dataset(), [1, 2], out, count=2)
    assert sorted(p.name for p in out.iterdir()) == ["example_0_Korean_character13.png", "example_1_up.png"] or \
        sorted(p.name for p in out.iterdir()) == ["example_0_up.png", "example_1_Korean_character13.png"]
    assert sorted(paths) == sorted(str(p) for p in out.iterdir())
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != out] == []
