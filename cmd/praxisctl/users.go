package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"praxis/internal/config"
)

type userDetails struct {
	Name        string  `json:"name"`
	DisplayName *string `json:"displayname"`
	AvatarURL   *string `json:"avatar_url"`
	Admin       bool    `json:"admin"`
	Deactivated bool    `json:"deactivated"`
	CreationTS  int64   `json:"creation_ts"` // seconds, as in Synapse
	Kind        string  `json:"praxis_kind"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func fmtTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z")
}

// passwordFlags are shared by the commands that set a password.
type passwordFlags struct {
	password, file string
}

func (p *passwordFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.password, "password", "", "the password (visible in the process list: prefer --password-file)")
	fs.StringVar(&p.file, "password-file", "", "read the password from this file (- for standard input)")
}

// get returns the chosen password, or a random one (generated=true) when
// none was given.
func (p *passwordFlags) get() (pw string, generated bool, err error) {
	switch {
	case p.password != "" && p.file != "":
		return "", false, usagef("give --password or --password-file, not both")
	case p.password != "":
		return p.password, false, nil
	case p.file != "":
		var b []byte
		if p.file == "-" {
			b, err = io.ReadAll(io.LimitReader(os.Stdin, 4096))
		} else {
			b, err = os.ReadFile(p.file)
		}
		if err != nil {
			return "", false, fmt.Errorf("read password: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", false, fmt.Errorf("password file %s is empty", p.file)
		}
		return pw, false, nil
	}
	buf := make([]byte, 15)
	if _, err := rand.Read(buf); err != nil {
		return "", false, err
	}
	return base64.RawURLEncoding.EncodeToString(buf), true, nil
}

// userID turns "alice" or "@alice:server" into a full user ID, asking the
// server for its name when only a localpart is given.
func userID(ctx context.Context, a *api, arg string) (string, error) {
	if strings.HasPrefix(arg, "@") {
		if !strings.Contains(arg, ":") {
			return "", usagef("%q is not a user ID (want @name:server or just name)", arg)
		}
		return arg, nil
	}
	var info struct {
		ServerName string `json:"server_name"`
	}
	if _, err := a.do(ctx, http.MethodGet, "/_praxis/admin/v1/server", nil, nil, &info); err != nil {
		return "", fmt.Errorf("find the server name (pass a full @user:server ID to skip this): %w", err)
	}
	server := info.ServerName
	return "@" + arg + ":" + server, nil
}

func init() {
	var create struct {
		pw           passwordFlags
		admin        bool
		displayName  string
		sharedSecret string
		configFile   string
	}
	register(&command{
		name: "user create", args: "USER [--admin] [--password P | --password-file F] [--shared-secret S | --config FILE]",
		help: "create an account; with a shared secret no admin token is needed (the first admin of a node)",
		flags: func(fs *flag.FlagSet) {
			create.pw.register(fs)
			fs.BoolVar(&create.admin, "admin", false, "make the account a server admin")
			fs.StringVar(&create.displayName, "displayname", "", "display name")
			fs.StringVar(&create.sharedSecret, "shared-secret", "", "registration.shared_secret of the server: register without an admin token")
			fs.StringVar(&create.configFile, "config", "", "read registration.shared_secret from this config file")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user (name or @name:server)"); err != nil {
				return err
			}
			pw, generated, err := create.pw.get()
			if err != nil {
				return err
			}
			secret := create.sharedSecret
			if secret == "" && create.configFile != "" {
				cfg, err := config.Load(config.Flags{ConfigFile: create.configFile}, os.Environ())
				if err != nil {
					return fmt.Errorf("config: %w", err)
				}
				if secret = cfg.Registration.SharedSecret; secret == "" {
					return fmt.Errorf("%s has no registration.shared_secret", create.configFile)
				}
				if !c.serverSet {
					c.server = adminURL(cfg)
				}
			}
			ctx := context.Background()
			if secret != "" {
				return c.createWithSecret(ctx, args[0], pw, generated, create.admin, create.displayName, secret)
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			id, err := userID(ctx, a, args[0])
			if err != nil {
				return err
			}
			if _, err := a.do(ctx, http.MethodGet, "/_synapse/admin/v2/users/"+pathEsc(id), nil, nil, nil); err == nil {
				return fmt.Errorf("%s already exists (use user reset-password or make-admin to change it)", id)
			} else if !isNotFound(err) {
				return err
			}
			body := map[string]any{"password": pw, "admin": create.admin}
			if create.displayName != "" {
				body["displayname"] = create.displayName
			}
			var u userDetails
			if printed, err := c.call(ctx, a, http.MethodPut, "/_synapse/admin/v2/users/"+pathEsc(id), nil, body, &u); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created %s (admin: %s)\n", u.Name, yesNo(u.Admin))
			if generated {
				fmt.Fprintf(c.stdout, "password: %s\n", pw)
			}
			return nil
		},
	})

	var list struct {
		name                string
		deactivated, admins bool
		limit, from         int
	}
	register(&command{
		name: "user list", args: "[--name S] [--deactivated] [--admins] [--limit N] [--from N]",
		help: "list accounts",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&list.name, "name", "", "only users whose name or display name contains this")
			fs.BoolVar(&list.deactivated, "deactivated", false, "include deactivated accounts")
			fs.BoolVar(&list.admins, "admins", false, "only server admins")
			fs.IntVar(&list.limit, "limit", 100, "page size")
			fs.IntVar(&list.from, "from", 0, "offset (the next_token of the previous page)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(list.limit)}, "from": {strconv.Itoa(list.from)}}
			if list.name != "" {
				q.Set("name", list.name)
			}
			if list.deactivated {
				q.Set("deactivated", "true")
			}
			if list.admins {
				q.Set("admins", "true")
			}
			var resp struct {
				Users     []userDetails `json:"users"`
				NextToken string        `json:"next_token"`
				Total     int           `json:"total"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v2/users", q, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER ID\tDISPLAY NAME\tADMIN\tDEACTIVATED\tKIND\tCREATED")
			for _, u := range resp.Users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, str(u.DisplayName), yesNo(u.Admin), yesNo(u.Deactivated), u.Kind, fmtTime(u.CreationTS*1000))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d of %d users", len(resp.Users), resp.Total)
			if resp.NextToken != "" {
				fmt.Fprintf(c.stdout, " (next page: --from %s)", resp.NextToken)
			}
			fmt.Fprintln(c.stdout)
			return nil
		},
	})

	register(&command{
		name: "user show", args: "USER",
		help: "show one account",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx := context.Background()
			id, err := userID(ctx, a, args[0])
			if err != nil {
				return err
			}
			var u userDetails
			if printed, err := c.call(ctx, a, http.MethodGet, "/_synapse/admin/v2/users/"+pathEsc(id), nil, nil, &u); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			for _, kv := range [][2]string{
				{"user ID", u.Name}, {"display name", str(u.DisplayName)}, {"avatar", str(u.AvatarURL)},
				{"kind", u.Kind}, {"admin", yesNo(u.Admin)}, {"deactivated", yesNo(u.Deactivated)}, {"created", fmtTime(u.CreationTS * 1000)},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
			}
			return tw.Flush()
		},
	})

	register(&command{
		name: "user deactivate", args: "USER",
		help: "deactivate an account: it is logged out everywhere, leaves its rooms and cannot log in again",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx := context.Background()
			id, err := userID(ctx, a, args[0])
			if err != nil {
				return err
			}
			if printed, err := c.call(ctx, a, http.MethodPost, "/_synapse/admin/v1/deactivate/"+pathEsc(id), nil, map[string]any{}, nil); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deactivated %s\n", id)
			return nil
		},
	})

	var reset struct {
		pw          passwordFlags
		keepDevices bool
	}
	register(&command{
		name: "user reset-password", args: "USER [--password P | --password-file F] [--keep-devices]",
		help: "set a new password (random when none is given) and log the user out everywhere",
		flags: func(fs *flag.FlagSet) {
			reset.pw.register(fs)
			fs.BoolVar(&reset.keepDevices, "keep-devices", false, "do not log out the user's devices")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			pw, generated, err := reset.pw.get()
			if err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx := context.Background()
			id, err := userID(ctx, a, args[0])
			if err != nil {
				return err
			}
			raw, err := a.do(ctx, http.MethodPost, "/_synapse/admin/v1/reset_password/"+pathEsc(id), nil,
				map[string]any{"new_password": pw, "logout_devices": !reset.keepDevices}, nil)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(raw)
			}
			fmt.Fprintf(c.stdout, "password of %s reset", id)
			if !reset.keepDevices {
				fmt.Fprint(c.stdout, "; all devices logged out")
			}
			fmt.Fprintln(c.stdout)
			if generated {
				fmt.Fprintf(c.stdout, "password: %s\n", pw)
			}
			return nil
		},
	})

	var makeAdmin struct{ revoke bool }
	register(&command{
		name: "user make-admin", args: "USER [--revoke]",
		help: "grant (or with --revoke take away) server admin rights",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&makeAdmin.revoke, "revoke", false, "take admin rights away instead")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx := context.Background()
			id, err := userID(ctx, a, args[0])
			if err != nil {
				return err
			}
			if printed, err := c.call(ctx, a, http.MethodPut, "/_synapse/admin/v1/users/"+pathEsc(id)+"/admin", nil, map[string]any{"admin": !makeAdmin.revoke}, nil); printed || err != nil {
				return err
			}
			if makeAdmin.revoke {
				fmt.Fprintf(c.stdout, "%s is no longer a server admin\n", id)
			} else {
				fmt.Fprintf(c.stdout, "%s is now a server admin\n", id)
			}
			return nil
		},
	})

	var login struct {
		pw   passwordFlags
		save string
	}
	register(&command{
		name: "login", args: "USER [--password P | --password-file F] [--save FILE]",
		help: "log in with a password and print the access token (for --token-file or PRAXIS_ADMIN_TOKEN)",
		flags: func(fs *flag.FlagSet) {
			login.pw.register(fs)
			fs.StringVar(&login.save, "save", "", "write the token to this file (mode 0600) instead of printing it")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if login.pw.password == "" && login.pw.file == "" {
				return usagef("login needs --password or --password-file")
			}
			pw, _, err := login.pw.get()
			if err != nil {
				return err
			}
			a, err := c.client(false)
			if err != nil {
				return err
			}
			var resp struct {
				UserID      string `json:"user_id"`
				AccessToken string `json:"access_token"`
				DeviceID    string `json:"device_id"`
			}
			body := map[string]any{
				"type":                        "m.login.password",
				"identifier":                  map[string]string{"type": "m.id.user", "user": args[0]},
				"password":                    pw,
				"initial_device_display_name": "praxisctl",
			}
			raw, err := a.do(context.Background(), http.MethodPost, "/_matrix/client/v3/login", nil, body, &resp)
			if err != nil {
				return err
			}
			if login.save != "" {
				if err := os.WriteFile(login.save, []byte(resp.AccessToken+"\n"), 0o600); err != nil {
					return fmt.Errorf("save token: %w", err)
				}
				fmt.Fprintf(c.stdout, "logged in as %s (device %s); token saved to %s\n", resp.UserID, resp.DeviceID, login.save)
				return nil
			}
			if c.json {
				return c.printJSON(raw)
			}
			fmt.Fprintf(c.stdout, "logged in as %s (device %s)\naccess token: %s\n", resp.UserID, resp.DeviceID, resp.AccessToken)
			return nil
		},
	})
}

// adminURL is where a server configured by cfg serves its admin API, as
// seen from the same machine.
func adminURL(cfg *config.Config) string {
	addr := cfg.Listen.Client
	if cfg.Admin.Listen != "" {
		addr = cfg.Admin.Listen
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // listening on all addresses: loopback is one of them
	}
	return "http://" + net.JoinHostPort(host, port)
}

// createWithSecret registers through /_synapse/admin/v1/register, which
// needs no admin token: the way to create a node's first admin.
func (c *cli) createWithSecret(ctx context.Context, user, pw string, generated, admin bool, displayName, secret string) error {
	localpart := strings.TrimPrefix(user, "@")
	localpart, _, _ = strings.Cut(localpart, ":")
	a, err := c.client(false)
	if err != nil {
		return err
	}
	var n struct {
		Nonce string `json:"nonce"`
	}
	if _, err := a.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", nil, nil, &n); err != nil {
		return fmt.Errorf("get registration nonce: %w", err)
	}
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(n.Nonce + "\x00" + localpart + "\x00" + pw + "\x00" + role))
	body := map[string]any{
		"nonce": n.Nonce, "username": localpart, "password": pw, "admin": admin, "mac": hex.EncodeToString(m.Sum(nil)),
	}
	if displayName != "" {
		body["displayname"] = displayName
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	raw, err := a.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", nil, body, &resp)
	if err != nil {
		return err
	}
	if c.json {
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			return err
		}
		if generated {
			out["password"] = pw
		}
		return c.printValue(out)
	}
	fmt.Fprintf(c.stdout, "created %s (admin: %s)\n", resp.UserID, yesNo(admin))
	if generated {
		fmt.Fprintf(c.stdout, "password: %s\n", pw)
	}
	fmt.Fprintf(c.stdout, "access token: %s\n", resp.AccessToken)
	return nil
}
