package federation_test

import (
	"context"
	"testing"

	"praxis/federation"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestAllowlist(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		a, err := federation.NewAllowlist(ctx, db, "hs1.test", []string{"hs2.test", "HS3.test:8448"})
		if err != nil {
			t.Fatal(err)
		}
		check := func(step string, want map[string]bool) {
			t.Helper()
			for server, w := range want {
				if got := a.Allowed(server); got != w {
					t.Errorf("%s: Allowed(%q) = %v, want %v", step, server, got, w)
				}
			}
		}
		check("config", map[string]bool{"hs2.test": true, "hs3.test:8448": true, "hs3.test": false, "hs4.test": false, "hs1.test": false, "": false})
		set := func(server string, allowed bool) {
			t.Helper()
			if err := db.Transact(ctx, func(tx *storage.DB) error { return a.Set(ctx, tx, server, allowed, "@admin:hs1.test") }); err != nil {
				t.Fatal(err)
			}
		}
		set("hs4.test", true)
		set("hs2.test", false)
		check("runtime", map[string]bool{"hs2.test": false, "hs4.test": true, "hs3.test:8448": true})
		// another process (a fresh allowlist on the same database) sees the changes
		b, err := federation.NewAllowlist(ctx, db, "hs1.test", []string{"hs2.test"})
		if err != nil {
			t.Fatal(err)
		}
		if b.Allowed("hs2.test") || !b.Allowed("hs4.test") {
			t.Errorf("second process: hs2=%v hs4=%v, want false true", b.Allowed("hs2.test"), b.Allowed("hs4.test"))
		}
		set("*", true)
		check("open federation", map[string]bool{"anything.example": true, "hs2.test": false, "hs1.test": false})
		if !a.AllowedServerOfID("@u:hs1.test") || !a.AllowedServerOfID("@u:hs4.test") || a.AllowedServerOfID("@u:hs2.test") {
			t.Error("AllowedServerOfID disagrees with Allowed")
		}
		list, err := a.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 4 { // *, hs2, hs3:8448, hs4
			t.Errorf("List = %+v, want 4 entries", list)
		}
	})
}
