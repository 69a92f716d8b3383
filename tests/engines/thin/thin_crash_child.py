"""Child of test_thin_crash: random writes, snapshots, deletes and discards on a pool, with a
commit every few operations. Before anything can change the device contents it reports on
stdout (unbuffered, so a SIGKILL loses nothing that was reported):

  S <tid> <state>   the state it found on opening (committed with transaction id tid)
  W <dev> <vblock> <seed>   about to write the whole block with pattern(seed)
  C <tid> <state>   about to commit this state as transaction id tid
  D <tid>           transaction tid is committed

A state is JSON {dev: {vblock: seed}}; every mapped block holds pattern(seed) entirely.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys

from storagekit._native import ThinPool

BS = 64 << 10
NV = 24


def pattern(seed: int) -> bytes:
    return struct.pack("<Q", seed) * (BS // 8)


def read_state(pool: ThinPool) -> dict[int, dict[int, int]]:
    return {
        dev: {
            vb: struct.unpack("<Q", pool.read(dev, vb * BS, 8))[0]
            for vb, _, _ in pool.mappings(dev)
        }
        for dev in pool.devices()
    }


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    meta, data, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    pool = ThinPool.open(meta, data, commit_interval=0, max_transaction_blocks=1 << 30)
    model = read_state(pool)
    tid = pool.status()["transaction_id"]
    emit(f"S {tid} {json.dumps(model)}")
    counter = 0
    while True:
        counter += 1
        op = rng.random()
        free_ids = [i for i in range(6) if i not in model]
        if not model or (op < 0.06 and free_ids):
            dev = rng.choice(free_ids)
            pool.message(f"create_thin {dev}")
            model[dev] = {}
        elif op < 0.12 and free_ids:
            dev, origin = rng.choice(free_ids), rng.choice(list(model))
            pool.message(f"create_snap {dev} {origin}")
            model[dev] = dict(model[origin])
        elif op < 0.16 and len(model) > 1:
            dev = rng.choice(list(model))
            pool.message(f"delete {dev}")
            del model[dev]
        elif op < 0.22:
            dev, vb = rng.choice(list(model)), rng.randrange(NV)
            n = rng.randrange(1, 4)
            pool.discard(dev, vb * BS, n * BS)
            for v in range(vb, vb + n):
                model[dev].pop(v, None)
        elif op < 0.9:
            dev, vb = rng.choice(list(model)), rng.randrange(NV)
            s = seed * 1_000_000 + counter
            emit(f"W {dev} {vb} {s}")
            pool.write(dev, vb * BS, pattern(s))
            model[dev][vb] = s
        else:
            emit(f"C {tid + 1} {json.dumps(model)}")
            pool.message(f"set_transaction_id {tid} {tid + 1}")
            pool.commit()
            tid += 1
            emit(f"D {tid}")


if __name__ == "__main__":
    main()
