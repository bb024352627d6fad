"""Tensor: a contiguous float32 (or int32) buffer in C memory, with a shape.

Every buffer of numbers is a Tensor (a few scalars for C to fill are ffi.new
where they are used). A Tensor is deliberately
tiny: no arithmetic (that is the kernels' job), just a pointer, a shape and
the checks that keep a wrong size from ever reaching C.
"""
from math import prod

from ._kernels import ffi

_CTYPES = {"float32": "float", "int32": "int32_t"}


class Tensor:
    """``Tensor((B, C))`` allocates B*C zeroed float32 values.

    ``ptr`` is the cffi pointer handed to kernels; ``shape`` a tuple of ints.
    Views (``rows``, ``view``) share memory and keep their base alive.
    """

    __slots__ = ("_base", "dtype", "ptr", "shape", "size")

    def __init__(self, shape, dtype="float32"):
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")
        self.dtype = dtype
        self.size = prod(self.shape)
        # max(1, .): cffi refuses zero-length arrays; a (0, C) tensor is legal
        self.ptr = ffi.new(f"{_CTYPES[dtype]}[]", max(1, self.size))
        self._base = None

    @classmethod
    def _wrap(cls, ptr, shape, dtype, base):
        t = cls.__new__(cls)
        t.ptr, t.shape, t.dtype, t._base = ptr, tuple(shape), dtype, base
        t.size = prod(t.shape)
        return t

    @classmethod
    def from_list(cls, values, shape=None, dtype="float32"):
        values = list(values)
        t = cls((len(values),) if shape is None else shape, dtype)
        if len(values) != t.size:
            raise ValueError(f"{len(values)} values do not fill shape {t.shape}")
        t.ptr[0:t.size] = values
        return t

    @property
    def nbytes(self):
        return self.size * 4

    def tolist(self):
        """The values, flat, as Python numbers (for tests and small outputs)."""
        return ffi.unpack(self.ptr, self.size) if self.size else []

    def rows(self, start, stop):
        """A view of rows [start, stop) along the first dimension: no copy."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"rows [{start}, {stop}) outside {self.shape}")
        inner = prod(self.shape[1:])
        return Tensor._wrap(self.ptr + start * inner, (stop - start,) + self.shape[1:],
                            self.dtype, self)

    def view(self, shape):
        """The same memory under another shape with the same number of values."""
        shape = tuple(shape)
        if prod(shape) != self.size:
            raise ValueError(f"cannot view {self.shape} as {shape}")
        return Tensor._wrap(self.ptr, shape, self.dtype, self)

    def copy_(self, other):
        """Copy ``other``'s values into this tensor (same shape and dtype)."""
        check(other, self.shape, self.dtype, "copy source")
        ffi.memmove(self.ptr, other.ptr, self.nbytes)
        return self

    def clone(self):
        return Tensor(self.shape, self.dtype).copy_(self)

    def fill_(self, value):
        self.ptr[0:self.size] = [value] * self.size
        return self

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype})"


def cached(cache, shape, dtype="float32"):
    """The Tensor of this shape kept in the dict ``cache``, made on first use:
    a layer's or a loss's output buffers, allocated once per batch size."""
    key = (tuple(shape), dtype)
    t = cache.get(key)
    if t is None:
        t = cache[key] = Tensor(shape, dtype)
    return t


def check(t, shape, dtype="float32", what="tensor"):
    """Raise TypeError unless ``t`` is a Tensor, ValueError unless it has
    exactly this shape and dtype.

    The layers and losses check their buffers here before each kernel call:
    a kernel trusts its sizes. (Where the caller made the buffers itself, of
    sizes it has just computed, it may call C directly.)
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(t).__name__}")
    if t.shape != tuple(shape) or t.dtype != dtype:
        raise ValueError(f"{what}: expected {dtype} {tuple(shape)}, got {t.dtype} {t.shape}")
    return t
