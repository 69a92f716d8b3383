"""The references a driver's layers are held by (Driver.get and put), shared by every
process that uses the driver's home: one file per layer under <home>/.refs, naming the holder
of each get not yet put — PERSISTENT (a graphdriver Get: it lasts until a put, whoever makes
it) or a process (storagekit.owners), whose references end when it dies. Files change under
an exclusive flock of <home>/.refs/.lock.

References do not survive a reboot (mounts do not either): the boot they were made in is
recorded, and those of an earlier boot are dropped when the home is next opened.

On a container's boot path (see storagekit/bootpath.py): it imports only os and contextlib.
"""

from __future__ import annotations

import contextlib
import os

from .fsutil import dead_temporaries, locked

#: The holder of a reference that lasts until it is put back, whoever puts it (Driver.get).
PERSISTENT = "-"


def boot_id() -> str | None:
    """This boot of the host (the kernel's random boot id); None where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


class References:
    """The reference files of one driver home."""

    def __init__(self, directory: str) -> None:
        self._refs_dir = directory
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        self._forget_refs_of_an_earlier_boot()

    def locked(self) -> contextlib.AbstractContextManager[int]:
        """Hold the lock under which references are read and changed."""
        return locked(self._refs_dir + "/.lock")

    def layers(self) -> list[str]:
        """The layers that have a reference file (call with the lock held)."""
        return [n for n in os.listdir(self._refs_dir) if not n.startswith(".")]

    def holders(self, layer_id: str) -> list[str]:
        """The holders of the layer's references, one per get not yet put: PERSISTENT, or a
        process (storagekit.owners) whose references end with it. (An older count file, a
        bare number, is that many persistent references.)"""
        try:
            with open(f"{self._refs_dir}/{layer_id}") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        if text.strip().isdigit():
            return [PERSISTENT] * int(text)
        return [line for line in text.splitlines() if line]

    def write(self, layer_id: str, holders: list[str]) -> None:
        """Replace the layer's reference file (under the refs lock). A rename, so a killed
        process leaves the old list or the new one; no fsync: references do not outlive the
        boot (see _forget_refs_of_an_earlier_boot), so they need no durability."""
        path = f"{self._refs_dir}/{layer_id}"
        if not holders:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        tmp = f"{self._refs_dir}/.{layer_id}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write("".join(f"{h}\n" for h in holders))
        os.replace(tmp, path)

    def _forget_refs_of_an_earlier_boot(self) -> None:
        """Mounts do not survive a reboot, and neither do their holders: counts recorded
        before the current boot are dropped."""
        boot = boot_id()
        if boot is None:
            return
        marker = self._refs_dir + "/.boot"
        with self.locked():
            try:
                with open(marker) as f:
                    if f.read() == boot:
                        return
            except FileNotFoundError:
                pass
            for name in os.listdir(self._refs_dir):
                if not name.startswith("."):
                    os.unlink(f"{self._refs_dir}/{name}")
            with open(marker, "w") as f:
                f.write(boot)

    def collect(self, known: set[str]) -> list[str]:
        """Remove the reference files of layers that are not in `known`, and temporary files
        of writers that died. Returns what went."""
        gone = []
        with self.locked():
            for name in self.layers():
                if name not in known:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self._refs_dir}/{name}")
                        gone.append(f"{self._refs_dir}/{name}")
        for path in dead_temporaries(self._refs_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                gone.append(path)
        return gone
