"""The protocol itself, whatever the driver (run on vfs): requests that are not requests,
endpoints and methods that do not exist, bodies over the limit, Init options and id maps the
plugin cannot honour — each a one-line {"Err"} with its status, and the plugin serves on."""

from __future__ import annotations

from refusals import raw_err, refused


def test_bodies_that_are_not_requests(vfs_plugin):
    g = vfs_plugin
    for body, says in ((b"{not json", "not JSON"), (b"\xff\xfe", "not JSON"),
                       (b"[1, 2]", "JSON object"), (b'"ID"', "JSON object"),
                       (b'{"ID": 12}', "ID must be a string"),
                       (b'{"ID": "x", "StorageOpt": [1]}', "StorageOpt"),
                       (b"{}", "no ID")):
        status, err = raw_err(g, "/GraphDriver.Create", body)
        assert status == 400 and says in err, (body, status, err)
    status, err = raw_err(g, "/GraphDriver.Init", b'{"Opts": "dm.fs=xfs"}')
    assert status == 400 and "Opts" in err
    status, err = raw_err(g, "/GraphDriver.ApplyDiff", b"")
    assert status == 400 and "id=" in err


def test_unknown_endpoints_methods_and_sizes(vfs_plugin):
    g = vfs_plugin
    assert raw_err(g, "/GraphDriver.Frobnicate", b"{}")[0] == 404
    assert raw_err(g, "/NetworkDriver.CreateNetwork", b"{}")[0] == 404
    assert raw_err(g, "/a/b/c", b"{}")[0] == 404
    assert raw_err(g, "/GraphDriver.Status", b"", method="GET")[0] == 405
    status, err = raw_err(g, "/GraphDriver.Create", b'{"ID": "' + b"a" * (2 << 20) + b'"}')
    assert status == 413 and "larger than" in err
    assert g.client.activate() == ["GraphDriver"]


def test_init_refuses_what_it_cannot_honour(vfs_plugin):
    c = vfs_plugin.client
    refused(c.init, opts=["no-equals-sign"], status=400, says="KEY=VALUE")
    refused(c.init, opts=["overlay.volatile=true"], status=400, says="unknown option")
    refused(c.init, uid_maps=[{"container_id": 0, "host_id": 100000, "size": 65536}],
            status=400, says="userns-remap")
    refused(c.init, gid_maps=[{"ContainerID": 0, "HostID": 100000, "Size": 65536}],
            status=400, says="GID remapping")
    refused(c.init, uid_maps=[{"container_id": "0"}], status=400)
    # Identity maps are no remapping at all, in either spelling.
    c.init(str(vfs_plugin.home / "docker-home"), [],
           uid_maps=[{"container_id": 0, "host_id": 0, "size": 65536}],
           gid_maps=[{"ContainerID": 0, "HostID": 0, "Size": 65536}])
    assert c.activate() == ["GraphDriver"]
