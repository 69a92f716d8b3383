// containerd's own snapshotter test suite (snapshots/testsuite), run against a storagekit
// snapshotter server through containerd's proxy client: the same client code containerd uses
// for a [proxy_plugins] snapshotter.
//
// Built in GOPATH mode against Debian's containerd sources (tests/containerd/gosuite.py says
// how), and run as root with -test.root:
//
//	storagekit.test -test.root -storagekit.socket /path/to/snapshotter.sock -storagekit.name NAME
package gotest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

var (
	socket = flag.String("storagekit.socket", "", "the snapshotter server's unix socket")
	name   = flag.String("storagekit.name", "storagekit", "the snapshotter's name in the suite")
)

func TestSnapshotter(t *testing.T) {
	if *socket == "" {
		t.Fatal("-storagekit.socket is required")
	}
	conn, err := grpc.Dial(*socket,
		// Debian's grpc-go has no credentials/insecure package: WithInsecure is its spelling.
		grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}),
	)
	if err != nil {
		t.Fatalf("dial %s: %v", *socket, err)
	}
	// The suite's cases are parallel subtests: they run after this function has returned.
	t.Cleanup(func() { conn.Close() })
	client := snapshotsapi.NewSnapshotsClient(conn)

	var seq int64
	testsuite.SnapshotterSuite(t, *name, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		// The suite gives every case a fresh snapshotter and uses the same keys in each, with
		// the cases running in parallel. One server serves them all here, so each case gets
		// a containerd namespace of its own instead: namespaces never see each other's
		// snapshots, which is what containerd relies on too.
		ns := fmt.Sprintf("testsuite-%d-%d", time.Now().UnixNano(), atomic.AddInt64(&seq, 1))
		sn := &namespaced{inner: proxy.NewSnapshotter(client, *name), ns: ns}
		return sn, func() error { return sn.removeAll(context.Background()) }, nil
	})
}

// namespaced pins every call to one containerd namespace.
type namespaced struct {
	inner snapshots.Snapshotter
	ns    string
}

func (s *namespaced) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.ns)
}

func (s *namespaced) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.inner.Stat(s.ctx(ctx), key)
}

func (s *namespaced) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return s.inner.Update(s.ctx(ctx), info, fieldpaths...)
}

func (s *namespaced) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return s.inner.Usage(s.ctx(ctx), key)
}

func (s *namespaced) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return s.inner.Mounts(s.ctx(ctx), key)
}

func (s *namespaced) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.inner.Prepare(s.ctx(ctx), key, parent, opts...)
}

func (s *namespaced) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.inner.View(s.ctx(ctx), key, parent, opts...)
}

func (s *namespaced) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.inner.Commit(s.ctx(ctx), name, key, opts...)
}

func (s *namespaced) Remove(ctx context.Context, key string) error {
	return s.inner.Remove(s.ctx(ctx), key)
}

func (s *namespaced) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.inner.Walk(s.ctx(ctx), fn, filters...)
}

func (s *namespaced) Close() error {
	return s.inner.Close()
}

// removeAll removes what a case left in its namespace, children before their parents (what
// a case's own snapshotter root going away does for a snapshotter of the suite's usual kind),
// so that the store is empty once the suite is done. It fails if something cannot go.
func (s *namespaced) removeAll(ctx context.Context) error {
	first := -1 // how many there were: each round removes at least the leaves, one level
	for round := 0; ; round++ {
		var infos []snapshots.Info
		if err := s.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			infos = append(infos, info)
			return nil
		}); err != nil {
			return fmt.Errorf("walk namespace %s: %w", s.ns, err)
		}
		if len(infos) == 0 {
			return nil
		}
		if first < 0 {
			first = len(infos)
		}
		if round > first {
			return fmt.Errorf("namespace %s: %d snapshots cannot be removed", s.ns, len(infos))
		}
		parents := map[string]bool{}
		for _, info := range infos {
			parents[info.Parent] = true
		}
		for _, info := range infos {
			if parents[info.Name] {
				continue // a parent goes in a later round, once its children are gone
			}
			if err := s.Remove(ctx, info.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return fmt.Errorf("remove %q in namespace %s: %w", info.Name, s.ns, err)
			}
		}
	}
}
