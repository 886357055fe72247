package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// apiError is a failed admin API call: the Matrix errcode when the server
// sent one, the HTTP status otherwise.
type apiError struct {
	Status  int
	ErrCode string
	Message string
}

func (e *apiError) Error() string {
	if e.ErrCode == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%s (HTTP %d): %s", e.ErrCode, e.Status, e.Message)
}

// api is a client of one server's admin API.
type api struct {
	base  string
	token string
	http  *http.Client
}

// adminToken finds the admin token: --token, then --token-file, then
// $PRAXIS_ADMIN_TOKEN.
func (c *cli) adminToken() (string, error) {
	if c.token != "" {
		return c.token, nil
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("token file %s is empty", c.tokenFile)
	}
	if t := os.Getenv("PRAXIS_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	return "", usagef("no admin token: pass --token, --token-file or set PRAXIS_ADMIN_TOKEN (a fresh node: create the first admin with user create --admin --shared-secret)")
}

// client returns an admin API client; withToken=false for the endpoints
// that authenticate otherwise (shared-secret registration, login).
func (c *cli) client(withToken bool) (*api, error) {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--server %q is not an http(s) URL", c.server)
	}
	a := &api{base: strings.TrimRight(c.server, "/"), http: &http.Client{Timeout: 60 * time.Second}}
	if withToken {
		if a.token, err = c.adminToken(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// do sends one request. body is encoded as JSON; the answer is decoded
// into out (when non-nil) and also returned raw for --json output.
func (a *api) do(ctx context.Context, method, path string, query url.Values, body, out any) (json.RawMessage, error) {
	u := a.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the server: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		var m struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(raw, &m) == nil && m.ErrCode != "" {
			e.ErrCode, e.Message = m.ErrCode, m.Error
		} else {
			e.Message = strings.TrimSpace(string(raw))
			if len(e.Message) > 200 {
				e.Message = e.Message[:200] + "…"
			}
			if e.Message == "" {
				e.Message = http.StatusText(resp.StatusCode)
			}
			if resp.StatusCode == http.StatusNotFound {
				// A plain-text 404 is not the Matrix API answering: most
				// likely the wrong listener. The admin API may live on its
				// own admin.listen address, which serves no client API.
				if strings.HasPrefix(path, "/_matrix/client/") {
					e.Message += " (no client API at " + a.base + "; with admin.listen set, give the client listener as --server for this command)"
				} else {
					e.Message += " (no admin API at " + a.base + "; is it on the admin.listen address?)"
				}
			}
		}
		return nil, e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s: %w", path, err)
		}
	}
	return raw, nil
}

// isNotFound reports whether err is the server's 404.
func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.ErrCode == "M_NOT_FOUND"
}

// printJSON writes raw JSON indented.
// call runs a request and, with --json, prints the server's answer as it
// came: printed tells the caller that the output is done and only the
// table it would draw is left out.
func (c *cli) call(ctx context.Context, a *api, method, path string, query url.Values, body, out any) (printed bool, err error) {
	raw, err := a.do(ctx, method, path, query, body, out)
	if err != nil || !c.json {
		return false, err
	}
	return true, c.printJSON(raw)
}

func (c *cli) printJSON(raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		_, err = c.stdout.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// printValue writes v as indented JSON.
func (c *cli) printValue(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// pathUser escapes a user or room ID for a URL path.
func pathEsc(s string) string { return url.PathEscape(s) }
