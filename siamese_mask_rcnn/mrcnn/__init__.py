"""Mask R-CNN core, a Keras 3 port keeping matterport's module names, API and layer names."""
