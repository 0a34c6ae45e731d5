"""CIFAR's python batches are pickles, and torchvision reads them with `pickle.load`, which runs whatever code a
pickle names: a dataset must never run code. While torchvision reads them, `safe_pickles()` gives its CIFAR module
an unpickler that builds only what CIFAR's batches hold (dicts, lists, str/bytes, ints and numpy arrays); a pickle
that names anything else is refused before it runs.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import types

from zeroshot.errors import DatasetError

# (module, name) pairs a CIFAR batch's pickle references: numpy's array reconstruction, under numpy 1's and 2's names
ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")}


class DataUnpickler(pickle.Unpickler):
    """Builds plain data and numpy arrays only."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise DatasetError(f"{getattr(self, 'source', 'a pickle')} names {module}.{name}, which a CIFAR batch never "
                               "holds: it was refused unread (pickles can run code). Download the dataset again from "
                               "its publisher")
        return super().find_class(module, name)


def load(file, *, encoding: str = "ASCII", **_):
    """pickle.load's signature, through DataUnpickler."""
    unpickler = DataUnpickler(file, encoding=encoding)
    unpickler.source = getattr(file, "name", "a pickle")
    return unpickler.load()


def loads(data: bytes, *, encoding: str = "ASCII", **_):
    return load(io.BytesIO(data), encoding=encoding)


@contextlib.contextmanager
def safe_pickles():
    """torchvision's CIFAR reader unpickles through DataUnpickler inside this block (its module's `pickle` name)."""
    import torchvision.datasets.cifar as cifar

    original = cifar.pickle
    cifar.pickle = types.SimpleNamespace(load=load, loads=loads, UnpicklingError=pickle.UnpicklingError)
    try:
        yield
    finally:
        cifar.pickle = original
