package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"

	"praxis/internal/call/turn"
)

func init() {
	var test struct{ timeout time.Duration }
	register(&command{
		name: "turn test", args: "[--timeout 30s]",
		help: "check that calls can be relayed: fetch TURN credentials as the token's user and relay through every TURN URI",
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&test.timeout, "timeout", 30*time.Second, "give up after this long")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if c.json {
				return usagef("turn test prints a report, not JSON")
			}
			if test.timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), test.timeout)
			defer cancel()
			// The credentials come from the client API. An admin.listen
			// address serves only the admin API, and its plain 404 would
			// read as "TURN is off"; say what is wrong instead.
			if err := clientAPIAt(ctx, a); err != nil {
				return err
			}
			return turn.Check(ctx, a.http, a.base, a.token, nil, c.stdout)
		},
	})
}

// clientAPIAt checks that a.base answers the client API's /versions.
func clientAPIAt(ctx context.Context, a *api) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/_matrix/client/versions", nil)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the server: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("no client API at %s (HTTP %d): turn test needs the client listener, not admin.listen", a.base, resp.StatusCode)
	}
	return nil
}
