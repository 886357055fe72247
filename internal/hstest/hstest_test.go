package hstest_test

import (
	"context"
	"testing"

	"praxis/internal/hstest"
)

func TestWhoAmIThroughRealServer(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		resp, err := alice.Versions(context.Background())
		if err != nil {
			t.Fatalf("versions: %v", err)
		}
		if !resp.ContainsGreaterOrEqual(mautrixV111) {
			t.Fatalf("server does not advertise v1.11: %v", resp.Versions)
		}
	})
}
