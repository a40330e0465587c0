"""The optional compiled fan-out (src/pushgate/_speedups.c, see pushgate/speedups.py).

Everything else about the package is in pyproject.toml. ``optional=True``: where no
C compiler or no Python headers are found, the build says so and goes on without
it, and pushgate uses its pure-Python path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pushgate._speedups",
            ["src/pushgate/_speedups.c"],
            optional=True,
        )
    ]
)
