"""python3 -m storagekit.engines.union: the engine's daemon program, with the same arguments
(see csrc/programs/uniond.cpp)."""

import os
import sys

from . import PROGRAM

os.execv(PROGRAM, [PROGRAM, *sys.argv[1:]])
