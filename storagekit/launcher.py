"""The `storagekit` command: the CLI, started without the interpreter's site initialisation.

setup.py installs this file as the `storagekit` script under the shebang
``#!<the interpreter that built it> -S``; it is not imported as part of the package.

Why -S: site reads every .pth file in site-packages and runs the start-up hooks other packages
put there (import hooks, certificate injection, distutils shims). Those cost 20-30 ms on every
call, most of a container boot through the CLI, and storagekit needs none of them. It needs
only paths: the site-packages directories, the path entries of .pth files, and its own install
hook (an editable install maps the package through one). This adds exactly those. If
storagekit still cannot be imported (an install layout this does not know), it falls back to
the full site initialisation, so the command is never broken, only slower.

For an editable install, setup.py also writes where the source packages are into
SOURCE_PACKAGES below, and the command finds them itself: the install hook's finder imports
pathlib and importlib.util (with urllib.parse, ipaddress, fnmatch: ~5 ms) that a boot does
not otherwise need.

(An installer rewrites a ``#!python`` line to its interpreter's path and drops any option, so
setup.py writes the interpreter's path itself.)
"""

import os
import sys

OWN_PTH = "__editable__.storagekit-"  # the hook of an editable install (setuptools)

# package name -> its source directory; written by setup.py for an editable install, empty
# for any other (the packages are then in site-packages). Keep this on one line.
SOURCE_PACKAGES: dict[str, str] = {}


class SourceFinder:
    """Finds storagekit's packages in the source tree of an editable install (only those:
    the tree's other directories, tests or scripts, stay unimportable)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # noqa: ANN001, ANN206
        where = SOURCE_PACKAGES.get(name)
        if where is None or os.path.basename(where) != name.rpartition(".")[2]:
            return None
        return _path_finder().find_spec(name, [os.path.dirname(where)])


def _path_finder():  # noqa: ANN202
    """The interpreter's PathFinder, from sys.meta_path: importing importlib.machinery for
    it would import importlib and warnings too (~0.5 ms)."""
    for finder in sys.meta_path:
        if getattr(finder, "__name__", None) == "PathFinder":
            return finder
    from importlib.machinery import PathFinder

    return PathFinder


def add_site_paths() -> None:
    """What site would add to sys.path, running only storagekit's own .pth hooks."""
    import site  # with -S, importing site only defines its functions

    dirs = site.getsitepackages()
    if site.check_enableusersite():
        dirs.insert(0, site.getusersitepackages())
    for sitedir in dirs:
        add_site_dir(sitedir)


def add_site_dir(sitedir: str) -> None:
    """Add sitedir and the directories its .pth files name to sys.path. Lines that import
    (start-up hooks) run only in storagekit's own .pth files."""
    import site

    try:
        names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
    except OSError:
        return
    if sitedir not in sys.path:
        sys.path.append(sitedir)
    for name in names:
        if name.startswith(OWN_PTH):
            if not SOURCE_PACKAGES:  # else SourceFinder does the hook's work
                site.addpackage(sitedir, name, None)
            continue
        try:
            with open(os.path.join(sitedir, name), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            if not line.strip() or line.startswith(("#", "import ", "import\t")):
                continue
            path = os.path.join(sitedir, line.rstrip())
            if path not in sys.path and os.path.exists(path):
                sys.path.append(path)


def exit_now(code: int) -> None:
    """Exit with code, skipping the interpreter's teardown when nothing needs it.

    Tearing the interpreter down frees every module and object one by one: ~5-10 ms here,
    for a process that is about to end anyway. It is skipped once the output is flushed, as
    long as nothing asked to run at exit: no atexit handler and no thread still running
    (files the CLI writes are closed by the code that opened them). Otherwise: sys.exit."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away (`| head`): quietly, as storagekit.cli does
        from storagekit.cli import closed_pipe

        os._exit(code or closed_pipe())
    except OSError:  # another write error: let the normal exit report it as usual
        sys.exit(code)
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    import atexit

    if getattr(atexit, "_ncallbacks", lambda: 1)():
        sys.exit(code)
    os._exit(code)


def run() -> None:
    import gc

    # Importing allocates many objects and no garbage cycles worth collecting: the
    # collector's passes meanwhile are pure cost. It runs again for the command itself.
    gc.disable()
    if not sys.flags.no_site:  # run with site after all (python launcher.py): nothing to add
        from storagekit.cli import main
    else:
        if SOURCE_PACKAGES:
            # Last, as the install hook would put it: sys.path (PYTHONPATH) still comes first.
            sys.meta_path.append(SourceFinder)
        add_site_paths()
        try:
            from storagekit.cli import main
        except ModuleNotFoundError as e:
            if e.name != "storagekit":
                raise
            import site

            site.main()
            from storagekit.cli import main
    gc.freeze()  # what the imports made stays: later collections skip it
    gc.enable()
    code = main()
    exit_now(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    run()
