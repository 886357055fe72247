package federation_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/internal/hstest"
)

// A third party checks a user's OpenID token at the user's server.
func TestOpenIDUserInfo(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice := n.Server("hs1.test").Register(t, "alice")
	tok, err := alice.RequestOpenIDToken(ctx)
	if err != nil {
		t.Fatalf("request token: %v", err)
	}
	if tok.MatrixServerName != "hs1.test" || tok.TokenType != "Bearer" || tok.ExpiresIn <= 0 {
		t.Fatalf("token answer %+v", tok)
	}
	userinfo := func(token string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "matrix://hs1.test/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), nil)
		resp, err := n.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tc := range []struct {
		name, token string
		status      int
		sub, code   string
	}{
		{"issued token", tok.AccessToken, 200, "@alice:hs1.test", ""},
		{"unknown token", "nope", 401, "", "M_UNKNOWN_TOKEN"},
		{"no token", "", 401, "", "M_UNKNOWN_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := userinfo(tc.token)
			if status != tc.status || gjson.GetBytes(body, "sub").String() != tc.sub || gjson.GetBytes(body, "errcode").String() != tc.code {
				t.Fatalf("got %d %s", status, body)
			}
		})
	}
	// only for oneself
	_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user", "@bob:hs1.test", "openid", "request_token"), struct{}{}, nil)
	if hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Fatalf("token for another user: %v, want M_FORBIDDEN", err)
	}
}
