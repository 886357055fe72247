package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

type regToken struct {
	Token       string `json:"token"`
	UsesAllowed *int   `json:"uses_allowed"`
	Pending     int    `json:"pending"`
	Completed   int    `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

// parseWhen reads a point in time: a duration from now ("7d", "12h",
// "30m"; later with sign +1, earlier with -1), an RFC 3339 time or a date.
func parseWhen(s string, now time.Time, sign int) (time.Time, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return now.Add(time.Duration(sign*days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(time.Duration(sign) * d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("%q is neither a duration (7d, 12h) nor a time (2026-01-31 or RFC 3339)", s)
}

func init() {
	var create struct {
		expires      string
		uses, length int
	}
	register(&command{
		name: "token create", args: "[TOKEN] [--uses N] [--expires 7d|TIME] [--length N]",
		help: "create a registration token: TOKEN (A-Z a-z 0-9 . _ ~ -, at most 64) or a random one",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&create.uses, "uses", -1, "how many registrations it allows (default unlimited)")
			fs.StringVar(&create.expires, "expires", "", "when it expires: a duration from now (7d, 12h) or a time (default never)")
			fs.IntVar(&create.length, "length", 0, "length of a random token (default 16)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if len(args) > 1 {
				return usagef("want at most one token, got %d arguments", len(args))
			}
			body := map[string]any{}
			if len(args) == 1 {
				body["token"] = args[0]
			}
			if create.uses >= 0 {
				body["uses_allowed"] = create.uses
			}
			if create.length != 0 {
				body["length"] = create.length
			}
			if create.expires != "" {
				t, err := parseWhen(create.expires, time.Now(), +1)
				if err != nil {
					return err
				}
				body["expiry_time"] = t.UnixMilli()
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var tok regToken
			if printed, err := c.call(context.Background(), a, http.MethodPost, "/_synapse/admin/v1/registration_tokens/new", nil, body, &tok); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created registration token %s (uses: %s, expires: %s)\n", tok.Token, usesText(tok.UsesAllowed), expiryText(tok.ExpiryTime))
			return nil
		},
	})

	var list struct{ valid, invalid bool }
	register(&command{
		name: "token list", args: "[--valid | --invalid]",
		help: "list registration tokens",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&list.valid, "valid", false, "only tokens that can still be used")
			fs.BoolVar(&list.invalid, "invalid", false, "only used-up or expired tokens")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			q := url.Values{}
			switch {
			case list.valid && list.invalid:
				return usagef("give --valid or --invalid, not both")
			case list.valid:
				q.Set("valid", "true")
			case list.invalid:
				q.Set("valid", "false")
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Tokens []regToken `json:"registration_tokens"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v1/registration_tokens", q, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOKEN\tUSES ALLOWED\tPENDING\tCOMPLETED\tEXPIRES")
			for _, t := range resp.Tokens {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Token, usesText(t.UsesAllowed), t.Pending, t.Completed, expiryText(t.ExpiryTime))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d tokens\n", len(resp.Tokens))
			return nil
		},
	})

	register(&command{
		name: "token show", args: "TOKEN",
		help: "show one registration token",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one token"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var t regToken
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v1/registration_tokens/"+pathEsc(args[0]), nil, nil, &t); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "token:\t%s\nuses allowed:\t%s\npending:\t%d\ncompleted:\t%d\nexpires:\t%s\n",
				t.Token, usesText(t.UsesAllowed), t.Pending, t.Completed, expiryText(t.ExpiryTime))
			return nil
		},
	})

	register(&command{
		name: "token delete", args: "TOKEN",
		help: "delete a registration token",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one token"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			if printed, err := c.call(context.Background(), a, http.MethodDelete, "/_synapse/admin/v1/registration_tokens/"+pathEsc(args[0]), nil, nil, nil); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted registration token %s\n", args[0])
			return nil
		},
	})
}

func usesText(p *int) string {
	if p == nil {
		return "unlimited"
	}
	return strconv.Itoa(*p)
}

func expiryText(p *int64) string {
	if p == nil {
		return "never"
	}
	return fmtTime(*p)
}
