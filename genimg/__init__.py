"""genimg: catalog-conditioned text-to-image with a CLIP attribute checker."""

__version__ = "0.1.0"
