"""The built-in data sources, one module each; importing them registers them.

A new source is a module here with a ``@register_dataset(name)`` builder
returning a `RawDataset` (in-memory `ImageSet`s, or `FileSet`s to stream).
"""

from . import cifar10, fashion_mnist, imagefolder, synthetic

__all__ = ["cifar10", "fashion_mnist", "imagefolder", "synthetic"]
