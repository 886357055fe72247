package keyring_test

import (
	"context"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/federation/keyring"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestStoreKeepsTheLongestValidity(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := keyring.NewStore(db)
		req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "hs2.test", KeyID: "ed25519:a"}
		now := time.Now()
		later := spec.AsTimestamp(now.Add(24 * time.Hour))
		sooner := spec.AsTimestamp(now.Add(time.Hour))
		key := gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes("0123456789abcdef0123456789abcdef")}

		for _, step := range []struct {
			name  string
			store *gomatrixserverlib.PublicKeyLookupResult
			at    spec.Timestamp
			want  spec.Timestamp // ValidUntilTS read back; 0 = absent
			exp   spec.Timestamp
		}{
			{"nothing stored", nil, spec.AsTimestamp(now), 0, 0},
			{"stored", &gomatrixserverlib.PublicKeyLookupResult{VerifyKey: key, ValidUntilTS: later}, spec.AsTimestamp(now), later, 0},
			{"an older copy does not shorten validity", &gomatrixserverlib.PublicKeyLookupResult{VerifyKey: key, ValidUntilTS: sooner}, spec.AsTimestamp(now), later, 0},
			{"retired stays retired", &gomatrixserverlib.PublicKeyLookupResult{VerifyKey: key, ValidUntilTS: later, ExpiredTS: sooner}, spec.AsTimestamp(now), later, sooner},
			{"a current copy does not un-retire it", &gomatrixserverlib.PublicKeyLookupResult{VerifyKey: key, ValidUntilTS: later}, spec.AsTimestamp(now), later, sooner},
		} {
			if step.store != nil {
				if err := s.StoreKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{req: *step.store}); err != nil {
					t.Fatalf("%s: store: %v", step.name, err)
				}
			}
			got, err := keyring.NewStore(db).FetchKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: step.at})
			if err != nil {
				t.Fatalf("%s: fetch: %v", step.name, err)
			}
			r, ok := got[req]
			if step.want == 0 {
				if ok {
					t.Fatalf("%s: got %+v, want nothing", step.name, r)
				}
				continue
			}
			if !ok || r.ValidUntilTS != step.want || r.ExpiredTS != step.exp || string(r.Key) != string(key.Key) {
				t.Fatalf("%s: got %+v (found %v), want valid_until %d expired %d", step.name, r, ok, step.want, step.exp)
			}
		}
	})
}
