package turn

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Check is `praxisctl turn test`: it fetches fresh credentials from the
// node's /voip/turnServer as the user of accessToken, probes every URI end
// to end and writes one verdict line per URI to w. It fails when TURN is
// off or when no URI relays; a partial failure is reported per line and
// still returns an error, so scripts see it.
func Check(ctx context.Context, hc *http.Client, baseURL, accessToken string, tlsCfg *tls.Config, w io.Writer) error {
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/_matrix/client/v3/voip/turnServer", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fetch TURN credentials: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("fetch TURN credentials: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var merr struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		_ = json.Unmarshal(body, &merr)
		fmt.Fprintf(w, "FAIL  /voip/turnServer: %d %s %s\n", resp.StatusCode, merr.ErrCode, merr.Error)
		if resp.StatusCode == http.StatusNotFound {
			return errors.New("TURN is not configured on this node (turn.enabled is false)")
		}
		return fmt.Errorf("fetch TURN credentials: HTTP %d %s", resp.StatusCode, merr.ErrCode)
	}
	var creds Credentials
	if err := json.Unmarshal(body, &creds); err != nil {
		return fmt.Errorf("fetch TURN credentials: %w", err)
	}
	if len(creds.URIs) == 0 {
		fmt.Fprintln(w, "FAIL  /voip/turnServer lists no URIs")
		return errors.New("no TURN URIs configured")
	}
	fmt.Fprintf(w, "ok    /voip/turnServer: %d URIs, credentials valid for %s\n", len(creds.URIs), time.Duration(creds.TTL)*time.Second)
	failed := 0
	for _, uri := range creds.URIs {
		if strings.HasPrefix(uri, "stun:") {
			fmt.Fprintf(w, "skip  %s (STUN only, nothing to relay)\n", uri)
			continue
		}
		res := Probe(ctx, uri, creds.Username, creds.Password, tlsCfg)
		if res.Err != nil {
			failed++
			fmt.Fprintf(w, "FAIL  %s: %v\n", uri, res.Err)
			continue
		}
		fmt.Fprintf(w, "ok    %s: relayed through %s in %s\n", uri, res.RelayAddr, res.RTT.Round(time.Millisecond))
	}
	switch {
	case failed == 0:
		fmt.Fprintln(w, "verdict: TURN works on every URI")
		return nil
	case failed == len(creds.URIs):
		fmt.Fprintln(w, "verdict: TURN is broken: no URI relays (check turn.public_ip, the firewall and the relay port range)")
		return errors.New("no TURN URI relays")
	default:
		fmt.Fprintf(w, "verdict: TURN partly works: %d of %d URIs fail; clients behind strict firewalls may not connect\n", failed, len(creds.URIs))
		return fmt.Errorf("%d of %d TURN URIs fail", failed, len(creds.URIs))
	}
}
