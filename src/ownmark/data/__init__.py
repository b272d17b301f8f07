"""Datasets as ImageSets (in memory, or streamed when large), their registry, splits, loaders.

Importing this package registers the offline datasets ``mnist5k``, ``digits`` and ``photos``.
"""

from ownmark.data.datasets import DATASETS, cache_dir, load_dataset
from ownmark.data.external import load_image_folder
from ownmark.data.imageset import ImageSet, make_loader, to_image_shape
from ownmark.data.splits import Splits, make_splits
from ownmark.data.streamed import StreamedImageSet
from ownmark.data.toy import toy_images, toy_loader

__all__ = [
    "DATASETS",
    "ImageSet",
    "Splits",
    "StreamedImageSet",
    "cache_dir",
    "load_dataset",
    "load_image_folder",
    "make_loader",
    "make_splits",
    "toy_images",
    "to_image_shape",
    "toy_loader",
]
