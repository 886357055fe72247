package federation_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"praxis/federation"
)

// refuseAll is a verifier that accepts no signature.
type refuseAll struct{}

func (refuseAll) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i := range out {
		out[i].Error = errors.New("no")
	}
	return out, nil
}

// Whatever the Authorization header and body, verification never panics
// and never lets a request through when no signature verifies.
func FuzzVerifyXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="hs1.test",destination="hs2.test",key="ed25519:a",sig="AAAA"`, `{}`)
	f.Add(`X-Matrix origin=hs1.test,key="ed25519:a",sig="x"`, ``)
	f.Add(`X-Matrix origin="",key=,sig=`, `not json`)
	f.Add(`Bearer abc`, `{"a":1}`)
	f.Add(`X-Matrix origin="hs1.test:8448",destination="hs2.test",key="ed25519:a",sig="AAAA"`, `[]`)
	allow, err := federation.NewAllowlist(context.Background(), nil, "hs2.test", []string{"*"})
	if err != nil {
		f.Fatal(err)
	}
	api := &federation.API{ServerName: "hs2.test", Verifier: refuseAll{}, Allow: allow}
	f.Fuzz(func(t *testing.T, header, body string) {
		r := httptest.NewRequest("PUT", "/_matrix/federation/v1/send/1", strings.NewReader(body))
		r.Header.Set("Authorization", header)
		origin, _, err := api.Verify(r)
		if err == nil {
			t.Fatalf("request with header %q verified as %q", header, origin)
		}
	})
}
