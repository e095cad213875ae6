"""Builds the Cython engine; all metadata lives in pyproject.toml.

The extension is required for ``pip install .``: a wheel without it would
silently fall back to the slower pure-Python twin. Set
``SYNAPSE_ENGINE_OPTIONAL_BUILD=1`` to allow a pure-Python install where no
C compiler is available.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "engine._native",
        ["engine/_native.pyx"],
        include_dirs=["engine"],
        depends=["engine/_md5.h", "engine/_md5_mb.h", "engine/_guard.h"],
        extra_compile_args=["-O3"],
        optional=os.environ.get("SYNAPSE_ENGINE_OPTIONAL_BUILD") == "1",
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}))
