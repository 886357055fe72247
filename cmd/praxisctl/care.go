package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"rsc.io/qr"
)

// practice, staff and couple commands: the care domain's admin API under
// /_praxis/admin/v1/practices. A server admin manages every practice, a
// practice admin their own.

type practiceInfo struct {
	ID             string                 `json:"practice_id"`
	Name           string                 `json:"name"`
	Address        string                 `json:"address"`
	Phone          string                 `json:"phone"`
	EmergencyPhone string                 `json:"emergency_phone"`
	BSNR           string                 `json:"bsnr"`
	LogoURL        string                 `json:"logo_url"`
	ServiceUser    string                 `json:"service_user"`
	BoardRoom      string                 `json:"board_room"`
	OpeningHours   map[string][][2]string `json:"opening_hours"`
	Timezone       string                 `json:"timezone"`
	CreatedTS      int64                  `json:"created_ts"`
}

const practicesPath = "/_praxis/admin/v1/practices"

func practicePath(id string, rest ...string) string {
	p := practicesPath + "/" + pathEsc(id)
	for _, r := range rest {
		p += "/" + pathEsc(r)
	}
	return p
}

// practiceOpt is the --practice flag of the staff and couple commands,
// which all act inside one practice.
type practiceOpt struct{ id string }

func (p *practiceOpt) register(fs *flag.FlagSet) {
	fs.StringVar(&p.id, "practice", "", "the practice ID")
}

func (p *practiceOpt) require() error {
	if p.id == "" {
		return usagef("--practice is required")
	}
	return nil
}

// practiceFlags are the profile fields of practice create and set; a flag
// not given is not sent.
type practiceFlags struct {
	name, address, phone, emergency, bsnr, logo, timezone, hours string
}

func (p *practiceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.name, "name", "", "the practice's name (shown as the service account's display name)")
	fs.StringVar(&p.address, "address", "", "postal address")
	fs.StringVar(&p.phone, "phone", "", "phone number")
	fs.StringVar(&p.emergency, "emergency-phone", "", "number named in closed notices for urgent cases")
	fs.StringVar(&p.bsnr, "bsnr", "", "Betriebsstättennummer")
	fs.StringVar(&p.logo, "logo", "", "logo as an mxc:// URI (upload it first)")
	fs.StringVar(&p.timezone, "timezone", "", "IANA time zone of the opening hours (default Europe/Berlin)")
	fs.StringVar(&p.hours, "hours", "", `opening hours: "mon-fri 08:00-12:00,14:00-18:00; sat 09:00-11:00" (days not named are closed; "" = always open)`)
}

// body returns the JSON fields of the flags that were given.
func (p *practiceFlags) body(fs *flag.FlagSet) (map[string]any, error) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	out := map[string]any{}
	for flagName, v := range map[string]struct {
		key string
		val string
	}{
		"name": {"name", p.name}, "address": {"address", p.address}, "phone": {"phone", p.phone},
		"emergency-phone": {"emergency_phone", p.emergency}, "bsnr": {"bsnr", p.bsnr}, "logo": {"logo_url", p.logo},
		"timezone": {"timezone", p.timezone},
	} {
		if given[flagName] {
			out[v.key] = v.val
		}
	}
	if given["hours"] {
		h, err := parseHours(p.hours)
		if err != nil {
			return nil, err
		}
		out["opening_hours"] = h
	}
	return out, nil
}

var dayNames = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

// parseHours reads "mon-fri 08:00-12:00,14:00-18:00; sat 09:00-11:00".
func parseHours(s string) (map[string][][2]string, error) {
	out := map[string][][2]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		days, times, ok := strings.Cut(part, " ")
		if !ok {
			return nil, usagef("--hours: %q: want DAYS HH:MM-HH:MM[,HH:MM-HH:MM]", part)
		}
		var ds []string
		for _, d := range strings.Split(days, ",") {
			from, to, isRange := strings.Cut(d, "-")
			i, j := indexOf(dayNames, from), indexOf(dayNames, to)
			switch {
			case !isRange && i >= 0:
				ds = append(ds, from)
			case isRange && i >= 0 && j >= i:
				ds = append(ds, dayNames[i:j+1]...)
			default:
				return nil, usagef("--hours: %q is not a day or day range (mon … sun)", d)
			}
		}
		for _, iv := range strings.Split(strings.TrimSpace(times), ",") {
			a, b, ok := strings.Cut(strings.TrimSpace(iv), "-")
			if !ok {
				return nil, usagef("--hours: %q is not HH:MM-HH:MM", iv)
			}
			for _, d := range ds {
				out[d] = append(out[d], [2]string{a, b})
			}
		}
	}
	return out, nil
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func formatHours(h map[string][][2]string) string {
	if len(h) == 0 {
		return "always open"
	}
	var parts []string
	for _, d := range dayNames {
		if ivs, ok := h[d]; ok {
			var s []string
			for _, iv := range ivs {
				s = append(s, iv[0]+"-"+iv[1])
			}
			parts = append(parts, d+" "+strings.Join(s, ","))
		}
	}
	return strings.Join(parts, "; ")
}

func (c *cli) printPractice(p *practiceInfo) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"practice:", p.ID}, {"name:", p.Name}, {"address:", orDash(p.Address)}, {"phone:", orDash(p.Phone)},
		{"emergency phone:", orDash(p.EmergencyPhone)}, {"BSNR:", orDash(p.BSNR)}, {"logo:", orDash(p.LogoURL)},
		{"service account:", p.ServiceUser}, {"request board:", orDash(p.BoardRoom)},
		{"opening hours:", formatHours(p.OpeningHours)}, {"time zone:", p.Timezone}, {"created:", fmtTime(p.CreatedTS)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	tw.Flush()
}

func init() {
	var create practiceFlags
	register(&command{
		name: "practice create", args: "ID --name NAME [--address A] [--phone P] [--emergency-phone P] [--bsnr B] [--hours H]",
		help:  "create a practice with its service account (@praxis-ID) and request board",
		flags: create.register,
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a practice ID (a-z, 0-9, -)"); err != nil {
				return err
			}
			body, err := create.body(fs)
			if err != nil {
				return err
			}
			if _, ok := body["name"]; !ok {
				return usagef("--name is required")
			}
			body["practice_id"] = args[0]
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var p practiceInfo
			if printed, err := c.call(context.Background(), a, http.MethodPost, practicesPath, nil, body, &p); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created practice %s (service account %s)\n", p.ID, p.ServiceUser)
			return nil
		},
	})

	register(&command{
		name: "practice list", args: "",
		help: "list the node's practices",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Practices []practiceInfo `json:"practices"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, practicesPath, nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PRACTICE\tNAME\tSERVICE ACCOUNT\tCREATED")
			for _, p := range resp.Practices {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.Name, p.ServiceUser, fmtTime(p.CreatedTS))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d practices\n", len(resp.Practices))
			return nil
		},
	})

	register(&command{
		name: "practice show", args: "ID",
		help: "show a practice's profile",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a practice ID"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var p practiceInfo
			if printed, err := c.call(context.Background(), a, http.MethodGet, practicePath(args[0]), nil, nil, &p); printed || err != nil {
				return err
			}
			c.printPractice(&p)
			return nil
		},
	})

	var set practiceFlags
	register(&command{
		name: "practice set", args: "ID [--name N] [--address A] [--phone P] [--emergency-phone P] [--bsnr B] [--logo MXC] [--hours H] [--timezone TZ]",
		help:  "change a practice's profile or opening hours (only the flags given change)",
		flags: set.register,
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a practice ID"); err != nil {
				return err
			}
			body, err := set.body(fs)
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return usagef("nothing to change: give at least one flag")
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var p practiceInfo
			if printed, err := c.call(context.Background(), a, http.MethodPut, practicePath(args[0]), nil, body, &p); printed || err != nil {
				return err
			}
			c.printPractice(&p)
			return nil
		},
	})

	var absence struct{ from, until, note string }
	register(&command{
		name: "practice absence", args: "ID --from TIME --until TIME [--note TEXT]",
		help: "close a practice for a period (holiday, training); patients writing then get one notice",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&absence.from, "from", "", "start: a date (2026-07-01), an RFC 3339 time or a duration from now")
			fs.StringVar(&absence.until, "until", "", "end (exclusive): a date, an RFC 3339 time or a duration from now")
			fs.StringVar(&absence.note, "note", "", `shown to patients, e.g. "Urlaub" (no health data)`)
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a practice ID"); err != nil {
				return err
			}
			if absence.from == "" || absence.until == "" {
				return usagef("--from and --until are required")
			}
			now := time.Now()
			from, err := parseWhen(absence.from, now, 1)
			if err != nil {
				return err
			}
			until, err := parseWhen(absence.until, now, 1)
			if err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				ID int64 `json:"absence_id"`
			}
			raw, err := a.do(context.Background(), http.MethodPost, practicePath(args[0], "absences"), nil,
				map[string]any{"start_ts": from.UnixMilli(), "end_ts": until.UnixMilli(), "note": absence.note}, &resp)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(raw)
			}
			fmt.Fprintf(c.stdout, "absence %d: closed %s – %s\n", resp.ID, from.Format(time.RFC3339), until.Format(time.RFC3339))
			return nil
		},
	})

	var absences struct{ del int64 }
	register(&command{
		name: "practice absences", args: "ID [--delete ABSENCE_ID]",
		help: "list a practice's current and coming absences, or delete one",
		flags: func(fs *flag.FlagSet) {
			fs.Int64Var(&absences.del, "delete", 0, "delete this absence")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a practice ID"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			ctx := context.Background()
			if absences.del != 0 {
				if _, err := a.do(ctx, http.MethodDelete, practicePath(args[0], "absences", fmt.Sprint(absences.del)), nil, nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "deleted absence %d\n", absences.del)
				return nil
			}
			var resp struct {
				Absences []struct {
					ID      int64  `json:"absence_id"`
					StartTS int64  `json:"start_ts"`
					EndTS   int64  `json:"end_ts"`
					Note    string `json:"note"`
				} `json:"absences"`
			}
			if printed, err := c.call(ctx, a, http.MethodGet, practicePath(args[0], "absences"), nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFROM\tUNTIL\tNOTE")
			for _, ab := range resp.Absences {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", ab.ID, fmtTime(ab.StartTS), fmtTime(ab.EndTS), orDash(ab.Note))
			}
			tw.Flush()
			return nil
		},
	})

	var sf struct {
		practice practiceOpt
		role     string
	}
	practiceFlag := sf.practice.register
	register(&command{
		name: "staff add", args: "USER --practice P --role admin|doctor|assistant",
		help: "make an existing account staff of a practice (create it first with user create)",
		flags: func(fs *flag.FlagSet) {
			practiceFlag(fs)
			fs.StringVar(&sf.role, "role", "", "admin, doctor or assistant")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if err := sf.practice.require(); err != nil {
				return err
			}
			if sf.role == "" {
				return usagef("--role is required")
			}
			return c.putStaff(args[0], sf.practice.id, map[string]any{"role": sf.role}, "added")
		},
	})
	register(&command{
		name: "staff set-role", args: "USER --practice P --role admin|doctor|assistant",
		help: "change a staff member's role",
		flags: func(fs *flag.FlagSet) {
			practiceFlag(fs)
			fs.StringVar(&sf.role, "role", "", "admin, doctor or assistant")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if err := sf.practice.require(); err != nil {
				return err
			}
			if sf.role == "" {
				return usagef("--role is required")
			}
			return c.putStaff(args[0], sf.practice.id, map[string]any{"role": sf.role}, "updated")
		},
	})
	var duty struct{ off bool }
	register(&command{
		name: "staff duty", args: "USER --practice P [--off]",
		help: "put a staff member on duty (invited into new coupling rooms) or, with --off, off duty",
		flags: func(fs *flag.FlagSet) {
			practiceFlag(fs)
			fs.BoolVar(&duty.off, "off", false, "off duty")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if err := sf.practice.require(); err != nil {
				return err
			}
			verb := "on duty:"
			if duty.off {
				verb = "off duty:"
			}
			return c.putStaff(args[0], sf.practice.id, map[string]any{"on_duty": !duty.off}, verb)
		},
	})
	register(&command{
		name: "staff remove", args: "USER --practice P",
		help:  "end a staff membership (the account stays, without staff rights)",
		flags: practiceFlag,
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if err := sf.practice.require(); err != nil {
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
			if _, err := a.do(ctx, http.MethodDelete, practicePath(sf.practice.id, "staff", id), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "removed %s from practice %s\n", id, sf.practice.id)
			return nil
		},
	})
	register(&command{
		name: "staff list", args: "--practice P",
		help:  "list a practice's staff",
		flags: practiceFlag,
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if err := sf.practice.require(); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Staff []struct {
					UserID  string `json:"user_id"`
					Role    string `json:"role"`
					OnDuty  bool   `json:"on_duty"`
					AddedTS int64  `json:"added_ts"`
				} `json:"staff"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, practicePath(sf.practice.id, "staff"), nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER ID\tROLE\tON DUTY\tADDED")
			for _, s := range resp.Staff {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.UserID, s.Role, yesNo(s.OnDuty), fmtTime(s.AddedTS))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d staff\n", len(resp.Staff))
			return nil
		},
	})
	// A staff member's sessions are an account's sessions: these delegate
	// to user devices / user logout after checking the account is staff.
	for _, sub := range []struct{ name, args, help string }{
		{"devices", "USER", "list a staff member's devices (sessions)"},
		{"logout", "USER (DEVICE_ID... | --all)", "log a staff member's device(s) out remotely, e.g. a lost phone"},
	} {
		var all bool
		register(&command{
			name: "staff " + sub.name, args: sub.args, help: sub.help,
			flags: func(fs *flag.FlagSet) {
				if sub.name == "logout" {
					fs.BoolVar(&all, "all", false, "log out every device of the staff member")
				}
			},
			run: func(c *cli, fs *flag.FlagSet, args []string) error {
				if len(args) == 0 {
					return usagef("want a staff member")
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
				var u struct {
					Kind string `json:"praxis_kind"`
				}
				if _, err := a.do(ctx, http.MethodGet, "/_synapse/admin/v2/users/"+pathEsc(id), nil, nil, &u); err != nil {
					return err
				}
				if u.Kind != "staff" {
					return fmt.Errorf("%s is not staff (kind %s); use user %s", id, u.Kind, sub.name)
				}
				delegated := append([]string{"user", sub.name, id}, args[1:]...)
				if all {
					delegated = append(delegated, "--all")
				}
				return c.delegate(delegated)
			},
		})
	}

	var code struct {
		practice           practiceOpt
		kind, expires, png string
		invert             bool
	}
	register(&command{
		name: "couple code", args: "--practice P --kind patient|practice [--expires 7d] [--png FILE]",
		help: "create a coupling code: prints the code, its matrix.to link and a QR code, and writes a PNG",
		flags: func(fs *flag.FlagSet) {
			code.practice.register(fs)
			fs.StringVar(&code.kind, "kind", "patient", "patient: single use, verified; practice: reusable (flyer, website), unverified")
			fs.StringVar(&code.expires, "expires", "", "lifetime (7d, 12h); default 7d for patient codes, none for practice codes")
			fs.StringVar(&code.png, "png", "", "write the QR code to this PNG file (default couple-<code id>.png; - for none)")
			fs.BoolVar(&code.invert, "invert", false, "print the terminal QR code for a light terminal background")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if err := code.practice.require(); err != nil {
				return err
			}
			body := map[string]any{"kind": code.kind}
			if code.expires != "" {
				now := time.Now()
				t, err := parseWhen(code.expires, now, 1)
				if err != nil || !t.After(now) {
					return usagef("--expires %q: want a duration such as 7d or 12h", code.expires)
				}
				body["expires_in_ms"] = t.Sub(now).Milliseconds()
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Code      string `json:"code"`
				CodeID    string `json:"code_id"`
				Alias     string `json:"alias"`
				Link      string `json:"link"`
				ExpiresTS int64  `json:"expires_ts"`
			}
			raw, err := a.do(context.Background(), http.MethodPost, practicePath(code.practice.id, "codes"), nil, body, &resp)
			if err != nil {
				return err
			}
			q, err := qr.Encode(resp.Link, qr.M)
			if err != nil {
				return fmt.Errorf("QR code: %w", err)
			}
			pngPath := code.png
			if pngPath == "" {
				pngPath = "couple-" + resp.CodeID + ".png"
			}
			if pngPath != "-" {
				if err := writeQRPNG(pngPath, q); err != nil {
					return err
				}
			}
			if c.json {
				return c.printJSON(raw)
			}
			fmt.Fprintf(c.stdout, "code:    %s\nid:      %s\nalias:   %s\nlink:    %s\nexpires: %s\n", resp.Code, resp.CodeID, resp.Alias, resp.Link, fmtExpiry(resp.ExpiresTS))
			if pngPath != "-" {
				fmt.Fprintf(c.stdout, "png:     %s\n", pngPath)
			}
			fmt.Fprintln(c.stdout)
			printQR(c.stdout, q, code.invert)
			return nil
		},
	})
	var cl struct{ practice practiceOpt }
	register(&command{
		name: "couple codes", args: "--practice P",
		help: "list a practice's coupling codes (the codes themselves are stored hashed)",
		flags: func(fs *flag.FlagSet) {
			cl.practice.register(fs)
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := cl.practice.require(); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Codes []struct {
					CodeID    string `json:"code_id"`
					Kind      string `json:"kind"`
					CreatedBy string `json:"created_by"`
					CreatedTS int64  `json:"created_ts"`
					ExpiresTS int64  `json:"expires_ts"`
					Uses      int64  `json:"uses"`
					Revoked   bool   `json:"revoked"`
				} `json:"codes"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, practicePath(cl.practice.id, "codes"), nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tUSES\tEXPIRES\tREVOKED\tCREATED BY")
			for _, k := range resp.Codes {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", k.CodeID, k.Kind, k.Uses, fmtExpiry(k.ExpiresTS), yesNo(k.Revoked), k.CreatedBy)
			}
			tw.Flush()
			return nil
		},
	})
	register(&command{
		name: "couple revoke", args: "CODE_ID --practice P",
		help: "withdraw a coupling code",
		flags: func(fs *flag.FlagSet) {
			cl.practice.register(fs)
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "a code ID (couple codes lists them)"); err != nil {
				return err
			}
			if err := cl.practice.require(); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			if _, err := a.do(context.Background(), http.MethodDelete, practicePath(cl.practice.id, "codes", args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked code %s\n", args[0])
			return nil
		},
	})
	register(&command{
		name: "couple list", args: "--practice P",
		help: "list a practice's couplings (patients and their rooms)",
		flags: func(fs *flag.FlagSet) {
			cl.practice.register(fs)
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := cl.practice.require(); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Couplings []struct {
					RoomID    string `json:"room_id"`
					Patient   string `json:"patient"`
					Verified  bool   `json:"verified"`
					Method    string `json:"method"`
					CreatedTS int64  `json:"created_ts"`
					EndedTS   int64  `json:"ended_ts"`
				} `json:"couplings"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, practicePath(cl.practice.id, "couplings"), nil, nil, &resp); printed || err != nil {
				return err
			}
			sort.Slice(resp.Couplings, func(i, j int) bool { return resp.Couplings[i].CreatedTS < resp.Couplings[j].CreatedTS })
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATIENT\tVERIFIED\tMETHOD\tROOM\tCOUPLED\tENDED")
			for _, k := range resp.Couplings {
				ended := "-"
				if k.EndedTS != 0 {
					ended = fmtTime(k.EndedTS)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Patient, yesNo(k.Verified), k.Method, k.RoomID, fmtTime(k.CreatedTS), ended)
			}
			tw.Flush()
			return nil
		},
	})
}

func fmtExpiry(ms int64) string {
	if ms == 0 {
		return "never"
	}
	return fmtTime(ms)
}

func (c *cli) putStaff(user, practice string, body map[string]any, verb string) error {
	a, err := c.client(true)
	if err != nil {
		return err
	}
	ctx := context.Background()
	id, err := userID(ctx, a, user)
	if err != nil {
		return err
	}
	var st struct {
		Role string `json:"role"`
	}
	if printed, err := c.call(ctx, a, http.MethodPut, practicePath(practice, "staff", id), nil, body, &st); printed || err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %s as %s of practice %s\n", verb, id, st.Role, practice)
	return nil
}

// delegate runs another praxisctl command with this invocation's global
// options.
func (c *cli) delegate(args []string) error {
	global := []string{"--server", c.server}
	if c.token != "" {
		global = append(global, "--token", c.token)
	}
	if c.tokenFile != "" {
		global = append(global, "--token-file", c.tokenFile)
	}
	if c.json {
		global = append(global, "--json")
	}
	var errBuf strings.Builder
	if code := run(append(global, args...), c.stdout, &errBuf); code != exitOK {
		msg := strings.TrimSpace(errBuf.String())
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// quietZone is the blank border QR readers need around the code.
const quietZone = 4

// writeQRPNG writes the code as a black-on-white PNG, 8 pixels a module.
func writeQRPNG(path string, q *qr.Code) error {
	const scale = 8
	n := (q.Size + 2*quietZone) * scale
	img := image.NewGray(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			v := color.Gray{Y: 255}
			if q.Black(x/scale-quietZone, y/scale-quietZone) {
				v = color.Gray{Y: 0}
			}
			img.SetGray(x, y, v)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write QR code: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("write QR code: %w", err)
	}
	return f.Close()
}

// printQR draws the code with half blocks, two modules a character row.
// By default light modules are drawn (terminals are usually dark, and a
// scanner wants dark modules on light ground); invert draws dark ones.
func printQR(w io.Writer, q *qr.Code, invert bool) {
	light := func(x, y int) bool { return !q.Black(x, y) != invert }
	var b strings.Builder
	for y := -quietZone; y < q.Size+quietZone; y += 2 {
		for x := -quietZone; x < q.Size+quietZone; x++ {
			top, bottom := light(x, y), light(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	io.WriteString(w, b.String())
}
