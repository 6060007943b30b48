"""Datasets and batching: MNIST-1D, Fashion-MNIST, moving-item clips for 3D CNNs.

Every array is channels-first, ``x: (N, C, *S)``, ``y: (N,)`` int32. Loaders return numpy
arrays on the host; ``batches`` slices them per step, and the augmentations are pure JAX
functions of ``(key, x)`` that can be jit-compiled (their size arguments are static).

Modules: ``dataset`` (the ``Dataset`` container, ``standardize``), ``mnist1d``, ``fashion``
(IDX files, search, verified download), ``clips`` (moving items), ``batching``,
``augmentation``. Their public names are re-exported here. Files are written atomically by
``jaxcnn._files.atomic_write``. Nothing here touches the network except
``download_fashion_mnist``.
"""
from jaxcnn._files import PathLike
from jaxcnn.data.augmentation import random_crop, random_flip, random_shift, random_shift_1d
from jaxcnn.data.batching import batches, epoch_permutation
from jaxcnn.data.clips import DIRECTIONS, Clips, load_fashion_clips, make_clips
from jaxcnn.data.dataset import Dataset, standardize
from jaxcnn.data.fashion import (DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5,
                                 FASHION_MNIST_URLS, download_fashion_mnist, find_fashion_mnist,
                                 load_fashion_mnist, read_idx)
from jaxcnn.data.mnist1d import MNIST1D_SEED, load_mnist1d

__all__ = [
    "Dataset", "Clips", "load_mnist1d", "read_idx", "load_fashion_mnist", "find_fashion_mnist",
    "download_fashion_mnist", "standardize", "make_clips", "load_fashion_clips",
    "epoch_permutation", "batches", "random_shift", "random_shift_1d", "random_crop",
    "random_flip", "FASHION_MNIST_CLASSES", "DIRECTIONS",
]
