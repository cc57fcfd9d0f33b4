"""A camera that sends video frames and a large array to a viewer, on one node or two."""

from .actors import Camera, Viewer

__all__ = ["Camera", "Viewer"]
