"""Install with ``pip install -e .`` (add ``[test]`` for the test tools)."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [line.strip() for line in (HERE / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

setup(
    name="siamese-mask-rcnn",
    version="0.1.0",
    description="One-shot instance segmentation by example: Siamese Mask R-CNN on Keras 3 / TensorFlow",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["siamese_mask_rcnn", "siamese_mask_rcnn.*"]),
    package_data={"siamese_mask_rcnn": ["data/imagenet-687.txt", "data/LICENSE-imagenet-subsets"]},
    install_requires=REQUIREMENTS,
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"]},
    entry_points={"console_scripts": ["siamese-mrcnn=siamese_mask_rcnn.cli:main"]},
)
