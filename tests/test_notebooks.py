"""The two notebooks run top to bottom, headless, with tiny parameters.

Each notebook's first code cell is tagged ``parameters``; the test inserts a cell right after
it that overrides the sizes and sends every output to ``tmp_path`` (papermill's convention).
The training notebook's checkpoint then feeds the demo notebook (found by its search for the
newest ``mask_rcnn_*.h5``, and passed explicitly with your-own-files inputs).

The kernel is a private kernelspec (``python3``) that runs *this* interpreter, found through
``JUPYTER_PATH``: it works on a clean machine after ``pip install -e ".[test]"`` and does not
depend on (or touch) the user's installed kernels.
"""
import json
import math
import os
import pathlib
import sys

import numpy as np
import pytest

from siamese_mask_rcnn.presets import preset_changes

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_NB = ROOT / "notebooks" / "train_siamese.ipynb"
DEMO_NB = ROOT / "notebooks" / "demo_siamese.ipynb"
KERNEL = "python3"
CELL_TIMEOUT = 900  # seconds per cell: generous for a busy 2-core machine

#: CPU-sized model settings on top of ``demo_config``: the "tiny" preset's changes to "demo".
TINY_MODEL = preset_changes("tiny")


# ----------------------------------------------------------------------------- helpers
def parameters_index(nb):
    """Index of the cell tagged ``parameters``; fails the test if there is none."""
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return index
    raise AssertionError("the notebook has no cell tagged 'parameters'")


def defined_names(source):
    """Top-level ``NAME = ...`` assignments of a parameters cell."""
    names = []
    for line in source.splitlines():
        head = line.split("#", 1)[0]
        if "=" in head and head[:1].isalpha():
            names.append(head.split("=", 1)[0].strip())
    return names


def inject_parameters(nb, overrides):
    """Insert a cell assigning ``overrides`` right after the parameters cell (in place)."""
    index = parameters_index(nb)
    unknown = sorted(set(overrides) - set(defined_names(nb.cells[index].source)))
    assert not unknown, f"overrides {unknown} are not parameters of the notebook"
    source = "# Injected by tests/test_notebooks.py\n" + "".join(
        f"{name} = {value!r}\n" for name, value in overrides.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def outputs_text(nb):
    """All stream and text outputs of an executed notebook, concatenated."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def count_images(nb):
    """Number of PNG outputs (figures) of an executed notebook."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
    """Environment for the kernels: a private ``python3`` kernelspec running this interpreter,
    the Agg backend, and the project on ``PYTHONPATH`` (in case it is not installed)."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter_dir))
        mp.setenv("MPLBACKEND", "Agg")
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        mp.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        yield jupyter_dir


def run_notebook(path, overrides, cwd):
    """Execute the notebook at ``path`` with ``overrides`` in ``cwd``; returns it executed."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, f"kernel {KERNEL!r} resolves to {spec.argv[0]}"
    nb = inject_parameters(nbformat.read(str(path), as_version=4), overrides)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT,
                                     startup_timeout=300, resources={"metadata": {"path": str(cwd)}})
    client.execute()
    out = pathlib.Path(cwd) / f"executed_{path.name}"
    nbformat.write(nb, str(out))  # kept for debugging a failure
    return nb


# ------------------------------------------------------------------- static checks (fast)
@pytest.mark.parametrize("path", [TRAIN_NB, DEMO_NB], ids=["train", "demo"])
def test_notebook_is_valid_and_parameters_come_first(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert parameters_index(nb) == code_cells[0]
    assert "OUT_DIR" in defined_names(nb.cells[code_cells[0]].source)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "stored outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_inject_parameters_inserts_after_the_parameters_cell():
    nb = nbformat.read(str(TRAIN_NB), as_version=4)
    index = parameters_index(nb)
    before = len(nb.cells)
    inject_parameters(nb, {"EPOCHS": 1, "OUT_DIR": "/x"})
    assert len(nb.cells) == before + 1
    assert nb.cells[index + 1].source.splitlines()[1:] == ["EPOCHS = 1", "OUT_DIR = '/x'"]
    with pytest.raises(AssertionError, match="NOT_A_PARAMETER"):
        inject_parameters(nb, {"NOT_A_PARAMETER": 3})


# ------------------------------------------------------------------- executed notebooks
@pytest.fixture(scope="module")
def trained(notebook_env, tmp_path_factory):
    """The training notebook run with tiny sizes: ``(executed notebook, output directory)``."""
    work = tmp_path_factory.mktemp("train_nb")
    out_dir = work / "train_out"
    nb = run_notebook(TRAIN_NB, dict(NUM_TRAIN=40, NUM_VAL=10, STEPS_PER_EPOCH=2, EPOCHS=1, MAX_MINUTES=None,
                                     EVAL_LIMIT=4, NUM_EXAMPLES=2, CONFIG_OVERRIDES=TINY_MODEL,
                                     OUT_DIR=str(out_dir)), cwd=work)
    return nb, out_dir


def test_train_notebook_trains_evaluates_and_reports_weights(trained):
    nb, out_dir = trained
    checkpoints = sorted(out_dir.glob("checkpoints/*/mask_rcnn_demo_0001.h5"))
    assert len(checkpoints) == 1
    assert (checkpoints[0].parent / "config.json").exists()
    text = outputs_text(nb)
    assert f"WEIGHTS = {checkpoints[0]}" in text
    summary = json.loads((out_dir / "notebook_summary.json").read_text())
    assert summary["weights"] == str(checkpoints[0])
    assert summary["epochs_trained"] == 1 and summary["steps_per_epoch"] == 2
    assert list(summary["rows"]) == ["background", "one-shot", "random boxes"]
    for label, row in summary["rows"].items():
        assert row["n_pairs"] > 0, label
        for key in ("map50_bbox", "map50_segm"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (label, key, row[key])
    for name in ("loss_history.png", "fig5_examples.png", "table.txt", "summary.json"):
        assert (out_dir / name).stat().st_size > 0, name
    assert "random boxes" in (out_dir / "table.txt").read_text()
    # scenes, references, loss history, Fig. 5 examples
    assert count_images(nb) >= 4


def test_demo_notebook_finds_newest_checkpoint(trained, tmp_path):
    _, train_out = trained
    out_dir = tmp_path / "demo_out"
    nb = run_notebook(DEMO_NB, dict(WEIGHTS=None, SEARCH_DIRS=[str(train_out)], NUM_SCENES=12, K_SHOT=2,
                                    NUM_QUERY_CATEGORIES=3, OUT_DIR=str(out_dir)), cwd=tmp_path)
    checkpoint = next(train_out.glob("checkpoints/*/mask_rcnn_demo_0001.h5"))
    text = outputs_text(nb)
    assert f"using the newest checkpoint {checkpoint}" in text
    assert "config.json beside the weights" in text
    summary = json.loads((out_dir / "demo_notebook_summary.json").read_text())
    assert summary["weights"] == str(checkpoint)
    assert summary["source"].startswith("embedded scene")
    assert set(summary["k_shot_detections"]) == {"1-shot", "2-shot"}
    assert len(summary["several_categories"]) == 3  # two present categories (at most) + one absent
    one_shot = json.loads((out_dir / "one_shot.json").read_text())
    assert one_shot["count"] == summary["one_shot_detections"] == len(one_shot["detections"])
    for name in ("one_shot.png", "several_categories.png"):
        assert (out_dir / name).stat().st_size > 0
    assert count_images(nb) >= 5


def test_demo_notebook_with_your_own_files(trained, tmp_path):
    from skimage import io as skio

    from siamese_mask_rcnn.datasets.synthetic import make_train_val

    _, train_out = trained
    checkpoint = next(train_out.glob("checkpoints/*/mask_rcnn_demo_0001.h5"))
    _, scenes = make_train_val(num_train=1, num_val=3, seed=5)
    image_id = 0
    class_id = scenes.image_categories[image_id][0]
    rng = np.random.default_rng(0)
    refs = scenes.sample_references(class_id, 2, rng, exclude_image_id=image_id)
    ref_paths = [str(tmp_path / f"ref{k}.png") for k in range(2)]
    for path, ref in zip(ref_paths, refs):
        skio.imsave(path, ref, check_contrast=False)
    query_path = str(tmp_path / "scene.jpg")
    skio.imsave(query_path, scenes.load_image(image_id))
    out_dir = tmp_path / "demo_own"
    nb = run_notebook(DEMO_NB, dict(WEIGHTS=str(checkpoint), REFERENCE_PATH=ref_paths, QUERY_PATH=query_path,
                                    NUM_SCENES=12, K_SHOT=2, NUM_QUERY_CATEGORIES=2, MIN_CONFIDENCE=0.0,
                                    OUT_DIR=str(out_dir)), cwd=tmp_path)
    assert "using the newest checkpoint" not in outputs_text(nb)
    summary = json.loads((out_dir / "demo_notebook_summary.json").read_text())
    assert summary["source"] == f"your files: 2 reference(s), query {query_path}"
    assert set(summary["k_shot_detections"]) == {"1-shot", "2-shot"}
    one_shot = json.loads((out_dir / "one_shot.json").read_text())
    assert one_shot["query"] == query_path and one_shot["references"] == ref_paths[:1]
    for det in one_shot["detections"]:
        assert det["mask_rle"]["size"] == [128, 128]
        assert det["score"] >= 0.0
