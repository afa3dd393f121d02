"""Shared pytest fixtures: paths to the project and to the shared real data."""
import os
import pathlib

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
COCO_SUBSET = SHARED_DATA / "coco_val2017_subset"
OMNIGLOT_DIR = SHARED_DATA / "omniglot"
MATTERPORT_LAYOUT = SHARED_DATA / "matterport_layout"


def _need(path):
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (only present next to the project checkout)")
    return path


@pytest.fixture(scope="session")
def project_root():
    return ROOT


@pytest.fixture(scope="session")
def coco_subset_dir():
    """Directory with images/ and annotations/instances_val2017_subset.json."""
    return _need(COCO_SUBSET)


@pytest.fixture(scope="session")
def coco_subset_annotations():
    return _need(COCO_SUBSET / "annotations" / "instances_val2017_subset.json")


@pytest.fixture(scope="session")
def omniglot_dir():
    return _need(OMNIGLOT_DIR)


@pytest.fixture(scope="session")
def matterport_layout_dir():
    return _need(MATTERPORT_LAYOUT)
