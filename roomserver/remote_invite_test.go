package roomserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrix"

	"praxis/internal/httputil"
)

func TestInviteFailed(t *testing.T) {
	remote := func(code int, body string) error {
		return fmt.Errorf("send invite: %w", gomatrix.HTTPError{Code: code, Contents: []byte(body)})
	}
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{"unreachable", errors.New("dial tcp: connection refused"), 502, "M_UNKNOWN", "hs2.test could not be reached"},
		{"refused with a reason", remote(403, `{"errcode":"M_FORBIDDEN","error":"not a partner"}`), 403, "M_FORBIDDEN", "hs2.test refused the invite: not a partner"},
		{"refused without a body", remote(403, `forbidden`), 403, "M_FORBIDDEN", "no reason given"},
		{"refused with another errcode", remote(403, `{"errcode":"M_UNKNOWN","error":"policy"}`), 403, "M_FORBIDDEN", "policy"},
		{"unknown invitee", remote(404, `{"errcode":"M_NOT_FOUND","error":"unknown user"}`), 404, "M_NOT_FOUND", "unknown user"},
		{"room version not supported", remote(400, `{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"v12"}`), 400, "M_INCOMPATIBLE_ROOM_VERSION", "hs2.test"},
		{"our signature rejected: not the client's 401", remote(401, `{"errcode":"M_UNAUTHORIZED","error":"bad sig"}`), 502, "M_UNKNOWN", "HTTP 401"},
		{"remote crash", remote(500, `{"errcode":"M_UNKNOWN","error":"boom"}`), 502, "M_UNKNOWN", "HTTP 500"},
		{"404 page without Matrix error", remote(404, `<html>`), 502, "M_UNKNOWN", "HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var he *httputil.Error
			if !errors.As(inviteFailed(context.Background(), "hs2.test", tc.err), &he) {
				t.Fatalf("not a Matrix error")
			}
			if he.Status != tc.wantStatus || he.ErrCode != tc.wantCode || !strings.Contains(he.Message, tc.wantMsg) {
				t.Errorf("got %d %s %q, want %d %s containing %q", he.Status, he.ErrCode, he.Message, tc.wantStatus, tc.wantCode, tc.wantMsg)
			}
		})
	}
}
