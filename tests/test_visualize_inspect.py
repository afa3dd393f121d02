"""matterport's inspection helpers in ``mrcnn.visualize``: ``draw_box``, ``display_differences``,
``draw_rois``, ``display_top_masks``, ``plot_overlaps``, ``display_table`` (Agg backend, no
TensorFlow). ``display_weight_stats`` on a model is tested in ``test_facade_graph.py``."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import lines, patches  # noqa: E402

from siamese_mask_rcnn.mrcnn import visualize  # noqa: E402


pytestmark = pytest.mark.usefixtures("headless_plots")  # conftest: plt.show() fails, figures closed


def rectangles(ax):
    """``(x, y, width, height, linestyle)`` of the Rectangle patches on ``ax``."""
    return [(r.get_x(), r.get_y(), r.get_width(), r.get_height(), r.get_linestyle())
            for r in ax.patches if isinstance(r, patches.Rectangle)]


def test_draw_box_outlines_the_box_inside_a_copy():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    out = visualize.draw_box(image, (4, 5, 12, 20), (255, 0, 0))
    assert not image.any()  # the input is left alone
    drawn = np.all(out == [255, 0, 0], axis=2)
    expected = np.zeros((20, 30), bool)
    expected[4:12, 5:20] = True
    expected[6:10, 7:18] = False  # 2-pixel outline inside the box
    np.testing.assert_array_equal(drawn, expected)
    assert not out[~expected].any()
    # a box reaching past the image: its visible edges only, no line on the image border
    clipped = visualize.draw_box(image, (-5, 25, 10, 40), (0, 255, 0))
    marked = np.all(clipped == [0, 255, 0], axis=2)
    assert marked[8:10, 25:30].all() and marked[0:10, 25:27].all()
    assert not marked[0:8, 27:30].any()
    with pytest.raises(ValueError, match="color"):
        visualize.draw_box(image, (0, 0, 5, 5), (255, 0))


def _two_instances():
    image = np.full((64, 64, 3), 40, dtype=np.uint8)
    gt_mask = np.zeros((64, 64, 2), bool)
    gt_mask[5:25, 5:25, 0] = True   # class 1
    gt_mask[35:60, 30:60, 1] = True  # class 2
    gt_box = np.array([[5, 5, 25, 25], [35, 30, 60, 60]])
    return image, gt_box, np.array([1, 2]), gt_mask


def test_display_differences_colours_and_score_iou_captions():
    image, gt_box, gt_class_id, gt_mask = _two_instances()
    pred_mask = np.zeros((64, 64, 3), bool)
    pred_mask[5:25, 5:20, 0] = True   # class 1 on GT 0: IoU 300/400 = 0.75
    pred_mask[35:60, 30:60, 1] = True  # class 1 on GT 1 (class 2): wrong class, IoU 1.0
    pred_box = np.array([[5, 5, 25, 20], [35, 30, 60, 60], [0, 0, 0, 0]])  # last row: padding
    pred_score = np.array([0.6, 0.9, 0.99])
    fig = visualize.display_differences(image, gt_box, gt_class_id, gt_mask, pred_box,
                                        np.array([1, 1, 1]), pred_score, pred_mask,
                                        ["BG", "circle", "square"])
    ax = fig.axes[0]
    # two GT captions are empty, then the predictions by descending score; padding dropped
    assert [t.get_text() for t in ax.texts] == ["", "", "0.90 / 1.00", "0.60 / 0.75"]
    assert "GT=green" in ax.get_title()
    edges = [tuple(np.round(p.get_edgecolor()[:3], 3)) for p in ax.patches
             if isinstance(p, patches.Rectangle)]
    assert edges == [(0, 1, 0)] * 2 + [(1, 0, 0)] * 2
    # masks blended into the image: GT green where only GT is, red+green where both are
    shown = ax.images[0].get_array()
    assert shown[20, 22, 1] > shown[20, 22, 0]  # GT-only pixel (columns 20-24): green
    assert shown[10, 10, 0] > 40 and shown[10, 10, 1] > 40  # both: red over green
    no_boxes = visualize.display_differences(image, gt_box, gt_class_id, gt_mask, pred_box,
                                             np.array([1, 1, 1]), pred_score, pred_mask,
                                             ["BG", "circle", "square"], title="t", show_box=False)
    assert rectangles(no_boxes.axes[0]) == [] and no_boxes.axes[0].get_title() == "t"
    with pytest.raises(ValueError, match="scores"):
        visualize.display_differences(image, gt_box, gt_class_id, gt_mask, pred_box,
                                      np.array([1, 1, 1]), pred_score[:2], pred_mask, ["BG", "a", "b"])


def test_draw_rois_positive_and_negative(capsys):
    image = np.zeros((50, 50, 3), dtype=np.uint8)
    rois = np.array([[10, 10, 30, 30], [0, 0, 10, 10], [20, 20, 40, 45]])
    refined = rois + np.array([2, 2, 2, 2])
    mini = np.zeros((3, 8, 8), np.float32)
    mini[0, :, :4] = 1.0  # left half of the first ROI
    class_ids = np.array([1, 0, 2])
    fig = visualize.draw_rois(image, rois, refined, mini, class_ids, ["BG", "a", "b"])
    ax = fig.axes[0]
    assert ax.get_title() == "3 ROIs"
    boxes = rectangles(ax)
    # every ROI dashed, plus a solid refined box for the two positive ones
    assert sum(style == "dashed" for *_, style in boxes) == 3
    assert sorted((x, y) for x, y, w, h, style in boxes if style == "solid") == [(12, 12), (22, 22)]
    assert len([a for a in ax.lines if isinstance(a, lines.Line2D)]) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b"]
    shown = np.asarray(ax.images[0].get_array())
    changed = shown.any(axis=2)
    assert changed[12:28, 11:19].all() and not changed[10:30, 20:30].any()  # left half only
    assert not changed[:10].any() and not changed[30:].any()
    out = capsys.readouterr().out
    assert "Positive ROIs:  2" in out and "Negative ROIs:  1" in out and "0.67" in out
    many = np.tile(rois, (5, 1))
    fig = visualize.draw_rois(image, many, many, np.zeros((15, 8, 8)), np.zeros(15, int), ["BG"],
                              limit=4, seed=3)
    assert fig.axes[0].get_title() == "Showing 4 random ROIs out of 15"
    assert len(rectangles(fig.axes[0])) == 4
    with pytest.raises(ValueError, match="class ids"):
        visualize.draw_rois(image, rois, refined, mini, class_ids[:2], ["BG", "a", "b"])


def test_display_top_masks_orders_classes_by_area():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20, 3), bool)
    mask[0:2, 0:2, 0] = True      # class 3: area 4
    mask[5:15, 5:15, 1] = True    # class 1: area 100 ...
    mask[0:5, 10:20, 2] = True    # ... and 50 more
    fig = visualize.display_top_masks(image, mask, np.array([3, 1, 1]), ["BG", "one", "two", "three"],
                                      limit=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["H x W=20x20", "one", "three", "-"]
    panel = np.asarray(fig.axes[1].images[0].get_array())
    assert panel[10, 10] == 1 and panel[2, 15] == 2 and panel[0, 0] == 0  # instances numbered
    assert not np.asarray(fig.axes[3].images[0].get_array()).any()


def test_plot_overlaps_marks_match_and_wrong():
    overlaps = np.array([[0.8, 0.1], [0.0, 0.6], [0.3, 0.0]])
    fig = visualize.plot_overlaps(np.array([1, 2, 0]), np.array([1, 1, 2]), np.array([0.9, 0.8, 0.7]),
                                  overlaps, ["BG", "cat", "dog"], threshold=0.5)
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "0.800\nmatch"
    assert cells[(1, 1)] == "0.600\nwrong"
    assert cells[(2, 0)] == "0.300\n"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (0.90)", "cat (0.80)", "dog (0.70)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    with pytest.raises(ValueError, match="overlaps shape"):
        visualize.plot_overlaps(np.array([1]), np.array([1]), np.array([0.5]), overlaps, ["BG", "cat"])


def test_display_table_prints_text_and_returns_escaped_html(capsys):
    markup = visualize.display_table([["name", "value"], ["a<b", 1.5], ["long name", None]])
    assert markup == ("<table><tr><td>name</td><td>value</td></tr><tr><td>a&lt;b</td><td>1.5</td></tr>"
                      "<tr><td>long name</td><td>None</td></tr></table>")
    assert capsys.readouterr().out.splitlines() == ["name       value", "a<b        1.5",
                                                     "long name  None"]
