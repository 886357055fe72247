package auth

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"praxis/internal/httputil"
)

func TestResolveUser(t *testing.T) {
	for _, tc := range []struct {
		name       string
		identifier string
		user       string
		want       string
		errcode    string
	}{
		{"localpart", `{"type":"m.id.user","user":"alice"}`, "", "@alice:hs.test", ""},
		{"full ID", `{"type":"m.id.user","user":"@alice:other.test"}`, "", "@alice:other.test", ""},
		{"legacy user", ``, "bob", "@bob:hs.test", ""},
		{"identifier wins", `{"type":"m.id.user","user":"alice"}`, "bob", "@alice:hs.test", ""},
		{"third party", `{"type":"m.id.thirdparty","medium":"email","address":"a@b"}`, "", "", "M_UNKNOWN"},
		{"not an object", `"alice"`, "", "", "M_BAD_JSON"},
		{"nobody", ``, "", "", "M_MISSING_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveUser(json.RawMessage(tc.identifier), tc.user, "hs.test")
			if tc.errcode != "" {
				var he *httputil.Error
				if !errors.As(err, &he) || he.ErrCode != tc.errcode {
					t.Fatalf("got %q, %v; want %s", got, err, tc.errcode)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestUIAErrorBody(t *testing.T) {
	ue := &UIAError{Flows: []Flow{{Stages: []string{StageDummy}}}, Session: "s1"}
	rec := httptest.NewRecorder()
	if !WriteUIAError(rec, ue) {
		t.Fatal("WriteUIAError did not recognise a UIAError")
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 401 || body["session"] != "s1" || body["params"] == nil || body["errcode"] != nil || body["completed"] != nil {
		t.Errorf("first challenge: %d %v; want 401 with flows, params, session and no errcode", rec.Code, body)
	}
	// Through the generic error writer it keeps its status and fields.
	he := httputil.ToError(&UIAError{Session: "s2", ErrCode: "M_FORBIDDEN", Message: "invalid password", Completed: []string{"x"}})
	if he.Status != 401 || he.ErrCode != "M_FORBIDDEN" || he.Extra["session"] != "s2" {
		t.Errorf("ToError(UIAError) = %+v", he)
	}
	if WriteUIAError(httptest.NewRecorder(), errors.New("other")) {
		t.Error("WriteUIAError wrote a non-UIA error")
	}
}

func TestToken(t *testing.T) {
	for _, tc := range []struct {
		header, query, want string
	}{
		{"Bearer abc", "", "abc"},
		{"bearer abc", "", "abc"},
		{"Basic abc", "", ""},
		{"Bearer", "", ""},
		{"", "qtok", "qtok"},
		{"Bearer hdr", "qtok", "hdr"},
	} {
		r := httptest.NewRequest("GET", "/x?access_token="+tc.query, nil)
		if tc.query == "" {
			r = httptest.NewRequest("GET", "/x", nil)
		}
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if got := Token(r); got != tc.want {
			t.Errorf("Token(header %q, query %q) = %q, want %q", tc.header, tc.query, got, tc.want)
		}
	}
}
