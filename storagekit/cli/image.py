"""`storagekit image`: import, list, export and remove images."""

from __future__ import annotations

import sys
from argparse import Namespace

from ..errors import InvalidArgument
from .command import arg, command, group, open_store
from .output import emit, human_size, plural, table, timestamp


@command("import", "import an OCI layout, a docker save archive or a root filesystem "
         "(directory or tar)",
         arg("source", metavar="FILE|DIR"),
         arg("--name", help="image name (required for a root filesystem); of a docker save "
                            "archive of several images, the one to import"))
def import_(args: Namespace) -> int:
    from ..image import Images

    with open_store(args) as store:
        images = Images(store).import_images(args.source, args.name)
        # --json: the (first) image's record, as for one image, with every name imported
        emit(args, images[0].as_dict() | {"images": [i.name for i in images]},
             lambda: [print(i.name) for i in images])
    return 0


@command("ls", "list images")
def ls(args: Namespace) -> int:
    from ..image import Images

    with open_store(args) as store:
        images = Images(store)
        rows = []
        for image in images.list():
            layers = images.layers(image)
            size = sum(store.layer(lid).size for lid in layers)
            rows.append((image, len(layers), size))
        emit(args, [i.as_dict() | {"layers": n, "size": sz} for i, n, sz in rows],
             lambda: table(
                 [(i.name, i.id[7:19], n, human_size(sz), timestamp(i.created))
                  for i, n, sz in rows],
                 ("NAME", "ID", "LAYERS", "SIZE", "CREATED")))
    return 0


@command("rm", "remove images and the layers only they use",
         arg("names", nargs="+", metavar="NAME"),
         arg("-f", "--force", action="store_true",
             help="remove the name even if containers use the image (its layers stay with "
                  "them)"))
def rm(args: Namespace) -> int:
    from ..image import Images

    with open_store(args) as store:
        images = Images(store)
        for name in args.names:
            removed = images.remove(name, force=args.force)
            if not args.json:
                print(f"{name} ({plural(len(removed), 'layer')} removed)")
        if args.json:
            emit(args, {"removed": args.names}, lambda: None)
    return 0


@command("export", "write an image as an OCI layout (with a docker manifest.json) that "
         "containerd and docker load accept",
         arg("name"),
         arg("-o", "--output", required=True, metavar="FILE|DIR/|-",
             help="a tar (written whole or not at all), a directory, or - for stdout"),
         arg("--compress", choices=["none", "gzip", "zstd"], default=None,
             help="recompress the layers (default: the blobs the image came in as, when "
                  "kept; else none)"))
def export(args: Namespace) -> int:
    from ..image import Images

    if args.output == "-" and sys.stdout.isatty():
        raise InvalidArgument("refusing to write an image to a terminal; use -o FILE")
    with open_store(args) as store:
        result = Images(store).export(args.name, args.output, compression=args.compress)
        if args.output != "-":
            emit(args, result, lambda: print(f"{result['output']}: {result['name']} "
                                             f"(manifest {result['manifest']})"))
    return 0


COMMANDS = (group("image", "import, list, export and remove images", import_, ls, rm, export),)
