"""The command groups: each a module of storagekit.cli named in its GROUPS table, and a new
group is one module plus its line there."""

from __future__ import annotations

import sys
import types

from storagekit import cli
from storagekit.cli.command import arg, command


def test_the_table_names_each_modules_commands():
    for module, names in cli.GROUPS.items():
        assert tuple(c.name for c in cli.group_module(module).COMMANDS) == names, module
    assert list(cli.COMMANDS) == [n for names in cli.GROUPS.values() for n in names]


def test_a_new_group_is_a_module_and_a_line(monkeypatch, capsys):
    seen = []

    @command("hello", "say hello", arg("who"), arg("--loud", action="store_true"))
    def hello(args):
        seen.append((args.who, args.loud, args.json, args.root, args.storage_opt))
        return 3

    module = types.ModuleType("storagekit.cli.greeting")
    module.COMMANDS = (hello,)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "GROUPS", {**cli.GROUPS, "greeting": ("hello",)})
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "hello": "greeting"})

    assert cli.main(["-o", "a=1", "hello", "world", "--loud", "--json", "--root", "/r",
                     "--storage-opt", "b=2"]) == 3
    assert seen == [("world", True, True, "/r", ["a=1", "b=2"])]
    assert cli.main(["hello"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("storagekit: ") and "who" in err
