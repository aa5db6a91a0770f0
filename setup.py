"""Build the optional C block path; everything else is in pyproject.toml.

``optional=True``: where it cannot build (no compiler, no OpenSSL headers) the install
still succeeds and cryptfs and sam run the pure-Python block path (``cryptfs info`` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cryptfs.core._blocks",
            sources=["cryptfs/core/_blocks.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,
        )
    ]
)
