"""Tests of the headless drawing helpers (matterport's visualize names + Fig.-5 layout)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from siamese_mask_rcnn.mrcnn import visualize  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("headless_plots")  # conftest: plt.show() fails, figures closed


def _scene():
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    masks = np.zeros((60, 80, 2), dtype=bool)
    masks[10:20, 10:30, 0] = True
    masks[30:50, 40:70, 1] = True
    boxes = np.array([[10, 10, 20, 30], [30, 40, 50, 70]])
    return image, masks, boxes


def _assert_png(path):
    assert path.is_file()
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE


def test_random_colors():
    colors = visualize.random_colors(6, seed=1)
    assert len(colors) == 6 and len(set(colors)) == 6
    assert all(len(c) == 3 and all(0 <= v <= 1 for v in c) for c in colors)
    assert colors == visualize.random_colors(6, seed=1)
    dark = visualize.random_colors(6, bright=False, seed=1)
    assert max(max(c) for c in dark) == pytest.approx(0.7)
    assert visualize.random_colors(0) == []


def test_apply_mask_changes_exactly_the_masked_pixels():
    image, masks, _ = _scene()
    original = image.copy()
    out = visualize.apply_mask(image, masks[:, :, 0], (1.0, 0.0, 0.0), alpha=0.4)
    np.testing.assert_array_equal(image, original)  # input untouched
    changed = np.any(out != image, axis=2)
    np.testing.assert_array_equal(changed, masks[:, :, 0])
    # 100 * 0.6 + 0.4 * 255 = 162 for red, 100 * 0.6 = 60 for green and blue
    np.testing.assert_array_equal(out[15, 15], [162, 60, 60])
    assert out.dtype == np.uint8
    with pytest.raises(ValueError, match="mask shape"):
        visualize.apply_mask(image, masks[:10, :, 0], (1, 0, 0))


def test_display_instances_and_save(tmp_path):
    image, masks, boxes = _scene()
    fig = visualize.display_instances(image, boxes, masks, np.array([1, 2]),
                                      ["BG", "cat", "dog"], scores=np.array([0.9, 0.8]),
                                      title="demo")
    assert isinstance(fig, matplotlib.figure.Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["cat 0.900", "dog 0.800"]
    path = visualize.save_figure(fig, tmp_path / "nested" / "dir" / "instances.png")
    _assert_png(tmp_path / "nested" / "dir" / "instances.png")
    assert str(path).endswith("instances.png")
    # the extension names the format; an unknown one gets a PNG
    visualize.save_figure(fig, tmp_path / "instances.jpg")
    assert (tmp_path / "instances.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    visualize.save_figure(fig, tmp_path / "instances.result")
    _assert_png(tmp_path / "instances.result")
    with pytest.raises(ValueError, match="channels"):
        visualize.display_instances(image, boxes, masks[:, :, :1], [1, 2], ["BG", "a", "b"])
    fig, ax = plt.subplots()
    assert visualize.display_instances(image, boxes, masks, [1, 2], ["BG", "a", "b"],
                                       ax=ax, captions=["x", "y"]) is fig


def test_other_displays_write_pngs(tmp_path):
    image, masks, boxes = _scene()
    figures = {
        "grid": visualize.display_images([image, image[:, :, 0], image], titles=["a", "b", "c"],
                                         cols=2, cmap="gray"),
        "boxes": visualize.draw_boxes(image, boxes=boxes, refined_boxes=boxes + 2, masks=masks,
                                      captions=["one", "two"], visibilities=[2, 1]),
        "pr": visualize.plot_precision_recall(0.75, np.array([1, 1, 0.5]), np.array([0, 0.5, 1])),
    }
    assert len(figures["grid"].axes) == 3
    assert "0.750" in figures["pr"].axes[0].get_title()
    for name, fig in figures.items():
        visualize.save_figure(fig, tmp_path / f"{name}.png", close=True)
        _assert_png(tmp_path / f"{name}.png")
    with pytest.raises(ValueError):
        visualize.draw_boxes(image)


def test_display_siamese_instances_has_reference_inset(tmp_path):
    image, masks, boxes = _scene()
    reference = np.zeros((30, 15, 3), dtype=np.uint8)
    reference[:, :, 1] = 200
    fig = visualize.display_siamese_instances(reference, image, boxes, masks,
                                              np.array([0.95, 0.7]), title="one-shot: dog")
    main_ax = fig.axes[0]
    assert main_ax.get_title() == "one-shot: dog"
    insets = [child for child in main_ax.child_axes]
    assert len(insets) == 1
    fig.canvas.draw()  # applies the equal-aspect layout
    x0, y0, width, height = insets[0].get_position().bounds
    main = main_ax.get_position().bounds
    assert x0 == pytest.approx(main[0]) and y0 == pytest.approx(main[1])  # lower-left corner
    assert height > width  # the reference's aspect ratio (30 x 15) is kept
    visualize.save_figure(fig, tmp_path / "siamese.png")
    _assert_png(tmp_path / "siamese.png")
    empty = visualize.display_siamese_instances(reference, image, np.zeros((0, 4)),
                                                np.zeros((60, 80, 0), bool), np.zeros(0))
    visualize.save_figure(empty, tmp_path / "empty.png")
    _assert_png(tmp_path / "empty.png")


def test_display_siamese_instances_reference_beside_hides_none_of_the_query(tmp_path):
    image, masks, boxes = _scene()
    reference = np.zeros((30, 15, 3), dtype=np.uint8)
    reference[:, :, 1] = 200
    fig = visualize.display_siamese_instances(reference, image, boxes, masks, np.array([0.95, 0.7]),
                                              reference_placement="beside")
    ax = fig.axes[0]
    assert not ax.child_axes  # no inset over the query
    left, right = ax.get_xlim()
    assert left < 0 and right == image.shape[1]
    extents = [im.get_extent() for im in ax.get_images()]
    reference_extent = [e for e in extents if e[1] <= 0]
    assert len(reference_extent) == 1  # drawn entirely left of the query (x < 0)
    x0, x1, y0, y1 = reference_extent[0]
    assert (y0 - y1) > (x1 - x0)  # the reference's aspect ratio (30 x 15) is kept
    visualize.save_figure(fig, tmp_path / "beside.png")
    _assert_png(tmp_path / "beside.png")
    with pytest.raises(ValueError, match="reference_placement must be 'inset' or 'beside'"):
        visualize.display_siamese_instances(reference, image, boxes, masks, None, reference_placement="top")


def test_score_captions_of_boxes_at_the_top_edge_stay_on_the_image():
    # a large query: the caption's height is then many image pixels
    image = np.zeros((1024, 1024, 3), np.uint8)
    masks = np.zeros((1024, 1024, 2), bool)
    boxes = np.array([[0, 50, 200, 300], [0, 400, 250, 700]])  # both touch the image's top edge
    fig = visualize.display_siamese_instances(np.zeros((8, 8, 3), np.uint8), image, boxes, masks,
                                              np.array([0.95, 0.7]), reference_placement="beside")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    captions = [t for t in ax.texts if t.get_text() in ("0.95", "0.70")]
    assert len(captions) == 2
    for text in captions:
        extent = text.get_window_extent(renderer)
        assert extent.y1 <= axes_box.y1 + 0.5 and extent.y0 >= axes_box.y0, text.get_text()
