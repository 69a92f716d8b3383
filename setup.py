"""Build storagekit and its native extension storagekit._native.

Metadata lives in pyproject.toml; this file only describes what setuptools cannot read from
there: the C++ extension built from csrc/ and the mapping of drivers/ onto storagekit.drivers.
"""

from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = Path(__file__).parent

# Compile the C++ sources in parallel (STORAGEKIT_BUILD_JOBS overrides the CPU count).
ParallelCompile("STORAGEKIT_BUILD_JOBS").install()

sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").rglob("*.cpp"))

native = Pybind11Extension(
    "storagekit._native",
    sources,
    include_dirs=["csrc"],
    libraries=["archive", "mount", "crypto", "z", "fuse3"],
    cxx_std=20,
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
)

driver_packages = ["storagekit.drivers"] + [
    "storagekit.drivers." + p for p in find_packages(where="drivers")
]

setup(
    packages=find_packages(include=["storagekit", "storagekit.*"]) + driver_packages,
    package_dir={"storagekit.drivers": "drivers"},
    package_data={"storagekit": ["py.typed", "*.pyi"]},
    ext_modules=[native],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
