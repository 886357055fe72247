package httputil

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name string `json:"name"`
	}
	for _, tc := range []struct {
		name    string
		in      string
		limit   int64
		wantErr string
	}{
		{"object", `{"name":"a"}`, 0, ""},
		{"empty body is {}", ``, 0, ""},
		{"not json", `{name:`, 0, "M_NOT_JSON"},
		{"invalid utf-8", "{\"name\":\"\xff\xfe\"}", 0, "M_NOT_JSON"},
		{"array", `[1]`, 0, "M_BAD_JSON"},
		{"wrong type", `{"name":5}`, 0, "M_BAD_JSON"},
		{"too large", `{"name":"` + strings.Repeat("x", 5000) + `"}`, 4096, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.in))
			if tc.limit > 0 {
				r = r.WithContext(WithBodyLimit(r.Context(), tc.limit))
			}
			var b body
			err := DecodeJSON(r, &b)
			got := ""
			if err != nil {
				got = ToError(err).ErrCode
			}
			if got != tc.wantErr {
				t.Fatalf("errcode = %q, want %q (err %v)", got, tc.wantErr, err)
			}
		})
	}
}

func TestWriteErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantHeader string
	}{
		{"matrix error keeps its code", Forbidden("no"), 403, "M_FORBIDDEN", ""},
		{"gmsl error", spec.NotFound("gone"), 404, "M_NOT_FOUND", ""},
		{"rate limit has Retry-After", LimitExceeded(1500), 429, "M_LIMIT_EXCEEDED", "2"},
		{"anything else is 500 without detail", errPlain("db password is hunter2"), 500, "M_UNKNOWN", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, httptest.NewRequest("GET", "/", nil), tc.err)
			if rec.Code != tc.wantStatus || !strings.Contains(rec.Body.String(), tc.wantCode) {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tc.wantStatus, tc.wantCode)
			}
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Fatal("internal error detail leaked to the client")
			}
			if got := rec.Header().Get("Retry-After"); got != tc.wantHeader {
				t.Fatalf("Retry-After = %q, want %q", got, tc.wantHeader)
			}
		})
	}
}

type errPlain string

func (e errPlain) Error() string { return string(e) }
