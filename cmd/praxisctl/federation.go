package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"praxis/federation/keyring"
)

// The partner allowlist (federation.allowed_servers in the config, changed
// at runtime here): praxisctl federation allow|deny|list.

type allowEntry struct {
	ServerName string `json:"server_name"`
	Allowed    bool   `json:"allowed"`
	Source     string `json:"source"`
	ChangedBy  string `json:"changed_by"`
	ChangedTS  int64  `json:"changed_ts"`
}

const allowlistPath = "/_praxis/admin/v1/federation/allowlist"

func init() {
	var rotate struct{ key string }
	register(&command{
		name: "federation rotate-key", args: "--key PATH", offline: true,
		help: "replace the server signing key; the old public key stays published as old_verify_keys (restart the server afterwards)",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&rotate.key, "key", "", "the signing key file (config key signing_key)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if rotate.key == "" {
				return usagef("--key PATH is required")
			}
			k, old, err := keyring.Rotate(rotate.key, time.Now())
			if err != nil {
				return err
			}
			if c.json {
				return c.printValue(map[string]string{"key_id": k.KeyID, "old_key_id": old.KeyID, "old_keys_file": keyring.OldKeysPath(rotate.key)})
			}
			fmt.Fprintf(c.stdout, "new key %s; %s retired (kept in %s); restart the server to sign with the new key\n",
				k.KeyID, old.KeyID, keyring.OldKeysPath(rotate.key))
			return nil
		},
	})

	change := func(allowed bool) func(c *cli, fs *flag.FlagSet, args []string) error {
		return func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one server name (\"*\" for open federation)"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			method := http.MethodPut
			if !allowed {
				method = http.MethodDelete
			}
			if printed, err := c.call(context.Background(), a, method, allowlistPath+"/"+pathEsc(args[0]), nil, nil, nil); printed || err != nil {
				return err
			}
			verb := "denied"
			if allowed {
				verb = "allowed"
			}
			fmt.Fprintf(c.stdout, "%s %s (effective now, recorded in the audit log)\n", verb, args[0])
			return nil
		}
	}
	register(&command{
		name: "federation allow", args: "SERVER",
		help: "let this node federate with SERVER (a health partner); \"*\" opens federation to all",
		run:  change(true),
	})
	register(&command{
		name: "federation deny", args: "SERVER",
		help: "stop federating with SERVER: inbound requests get 403, nothing is sent to it",
		run:  change(false),
	})
	register(&command{
		name: "federation list", args: "",
		help: "show the effective partner allowlist (config and runtime changes)",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Servers []allowEntry `json:"servers"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, allowlistPath, nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVER\tALLOWED\tSOURCE\tCHANGED BY\tCHANGED")
			for _, e := range resp.Servers {
				changed := ""
				if e.ChangedTS > 0 {
					changed = time.UnixMilli(e.ChangedTS).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", e.ServerName, e.Allowed, e.Source, e.ChangedBy, changed)
			}
			tw.Flush()
			return nil
		},
	})
}
