"""Build storagekit and its native extensions (storagekit._native and the two it loads).

Metadata lives in pyproject.toml; this file only describes what setuptools cannot read from
there: the C++ extensions built from csrc/, the mapping of drivers/ onto storagekit.drivers,
and the `storagekit` command (storagekit/launcher.py).
"""

import os
import sys
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import Distribution, find_packages, setup

HERE = Path(__file__).parent

# Compile the C++ sources in parallel (STORAGEKIT_BUILD_JOBS overrides the CPU count).
ParallelCompile("STORAGEKIT_BUILD_JOBS").install()


def area_sources(own: list[str], uses: list[str]) -> list[str]:
    """The C++ files of an extension or program: what every area shares (csrc/common), all
    of its own areas' and, of areas whose code it only uses, everything but their Python
    bindings."""
    files = []
    for area in ["common", *own, *uses]:
        for p in sorted((HERE / "csrc" / area).glob("*.cpp")):
            if area in own or p.name != "bindings.cpp":
                files.append(str(p.relative_to(HERE)))
    return files


def extension(name: str, own: list[str], uses: list[str], libraries: list[str]):
    # One extension per set of libraries: a process loads only what it uses (see
    # csrc/modules/native.cpp). Symbols stay hidden, so areas compiled into two modules
    # do not clash.
    return Pybind11Extension(
        f"storagekit.{name}",
        [f"csrc/modules/{name.lstrip('_')}.cpp", *area_sources(own, uses)],
        include_dirs=["csrc"],
        libraries=libraries,
        cxx_std=20,
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
    )


extensions = [
    extension("_native", ["copyup", "whiteout", "changes", "mount", "namespaces"], [], ["mount"]),
    extension("_archive", ["archive"], ["whiteout", "copyup"], ["archive", "crypto"]),
    extension("_fuse", ["thin"], [], ["fuse3"]),
]

# Programs, installed inside the package beside the extensions: name -> (main, areas used).
# The union engine's daemon starts for every union mount: as a program the mount is live in
# ~4 ms, as `python -m` with the extension loaded in ~35 (csrc/programs/uniond.cpp).
programs = {
    "storagekit-uniond": ("csrc/programs/uniond.cpp", ["union", "copyup", "whiteout"]),
}


class build_ext_and_programs(build_ext):
    """build_ext, then the programs, written where the extensions went (the package
    directory in the source tree for an editable install, the build tree otherwise)."""

    def run(self):
        super().run()
        out_dir = os.path.dirname(self.get_ext_fullpath("storagekit._native"))
        for name, (main, areas) in programs.items():
            objects = self.compiler.compile(
                [main, *area_sources([], areas)],
                output_dir=os.path.join(self.build_temp, "programs"),
                include_dirs=["csrc"],
                extra_postargs=["-std=c++20", "-O2", "-g0", "-Wall", "-Wextra",
                                "-fvisibility=hidden"],
            )
            self.compiler.link_executable(objects, name, output_dir=out_dir,
                                          extra_postargs=["-pthread"], target_lang="c++")

    def get_outputs(self):
        out_dir = os.path.dirname(self.get_ext_fullpath("storagekit._native"))
        return super().get_outputs() + [os.path.join(out_dir, name) for name in programs]

LAUNCHER = "storagekit/launcher.py"


# setuptools' own build_scripts command, whichever distutils it comes from
build_scripts = Distribution().get_command_class("build_scripts")


class build_launcher(build_scripts):
    """Writes the `storagekit` command from storagekit/launcher.py, under a shebang that names
    this interpreter with -S (launcher.py says why). An installer would rewrite a `#!python`
    line and drop the option, so the path is written here, at build time: the command then
    runs with the interpreter that built the extension, as the extension requires anyway."""

    editable_mode = False  # setuptools sets it for an editable install (pip install -e)

    def copy_scripts(self):
        self.mkpath(self.build_dir)
        target = os.path.join(self.build_dir, "storagekit")
        if not self.dry_run:
            source = (HERE / LAUNCHER).read_text(encoding="utf-8")
            if self.editable_mode:  # the command finds the packages in this tree itself
                empty = "SOURCE_PACKAGES: dict[str, str] = {}\n"
                if source.count(empty) != 1:
                    raise RuntimeError(f"{LAUNCHER} must define SOURCE_PACKAGES empty, once")
                source = source.replace(empty, f"SOURCE_PACKAGES = {SOURCE_PACKAGES!r}\n")
            with open(target, "w", encoding="utf-8") as f:
                f.write(f"#!{sys.executable} -S\n{source}")
            os.chmod(target, 0o755)
        return [target], [target]


driver_packages = ["storagekit.drivers"] + [
    "storagekit.drivers." + p for p in find_packages(where="drivers")
]
package_dir = {"storagekit.drivers": "drivers"}

# Where an editable install finds the top packages (the `storagekit` command's map).
SOURCE_PACKAGES = {
    name: str(HERE.resolve() / directory)
    for name, directory in {"storagekit": "storagekit", **package_dir}.items()
}

setup(
    packages=find_packages(include=["storagekit", "storagekit.*"]) + driver_packages,
    package_dir=package_dir,
    package_data={"storagekit": ["py.typed", "*.pyi", "bench/schema.json"]},
    ext_modules=extensions,
    scripts=[LAUNCHER],
    cmdclass={"build_ext": build_ext_and_programs, "build_scripts": build_launcher},
    zip_safe=False,
)
