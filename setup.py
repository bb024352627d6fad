"""setuptools entry: all metadata lives in pyproject.toml; this file only
tells cffi which builder makes the C extension ``pynn._kernels``."""
from setuptools import setup

setup(cffi_modules=["pyproject_build/build_kernels.py:ffibuilder"])
