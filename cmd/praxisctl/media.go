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

// media commands: Synapse's media admin API (internal/media/admin.go).

type mediaEntry struct {
	MediaID       string  `json:"media_id"`
	MediaType     string  `json:"media_type"`
	MediaLength   int64   `json:"media_length"`
	UploadName    *string `json:"upload_name"`
	CreatedTS     int64   `json:"created_ts"`
	LastAccessTS  *int64  `json:"last_access_ts"`
	QuarantinedBy *string `json:"quarantined_by"`
	Pending       bool    `json:"pending"`
}

type mediaDeleted struct {
	DeletedMedia []string `json:"deleted_media"`
	Total        int      `json:"total"`
}

// parseMXC reads "mxc://server/id" or "server/id". The server name may
// carry a port; a media ID is one path segment of URL-safe characters,
// so anything else is a typo, not a file the server could hold.
func parseMXC(s string) (server, mediaID string, err error) {
	rest := strings.TrimPrefix(s, "mxc://")
	server, mediaID, ok := strings.Cut(rest, "/")
	if !ok || server == "" || mediaID == "" || strings.ContainsAny(server, "/?#@ ") || !validMediaID(mediaID) {
		return "", "", usagef("%q is not a media reference (want mxc://server/media_id or server/media_id)", s)
	}
	return server, mediaID, nil
}

func validMediaID(id string) bool {
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return id != ""
}

// fmtSize prints a byte count the way people read file sizes.
func fmtSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// parseBefore reads the --before of media purge: a duration back from
// now, a date or RFC 3339 time, or a Unix timestamp in milliseconds as
// the admin API takes it. A time in the future would delete every file,
// which is never what a retention purge means, so it is refused.
func parseBefore(s string, now time.Time) (int64, error) {
	var ts int64
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && s[0] != '-' && s[0] != '+' {
		ts = n
	} else {
		t, err := parseWhen(s, now, -1)
		if err != nil {
			return 0, usagef("--before %q is neither a duration (30d, 12h), a time (2026-01-31 or RFC 3339) nor a timestamp in milliseconds", s)
		}
		ts = t.UnixMilli()
	}
	if ts > now.UnixMilli() {
		return 0, usagef("--before %s lies in the future: that would delete every file", s)
	}
	return ts, nil
}

func init() {
	var list struct {
		limit, from int
		orderBy     string
		backwards   bool
	}
	register(&command{
		name: "media list", args: "USER [--limit N] [--from N] [--order-by KEY] [--backwards]",
		help: "list the files a local user uploaded",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&list.limit, "limit", 100, "page size (at most 1000)")
			fs.IntVar(&list.from, "from", 0, "offset (the next_token of the previous page)")
			fs.StringVar(&list.orderBy, "order-by", "created_ts", "created_ts, last_access_ts, media_length, media_type, media_id, upload_name or quarantined_by")
			fs.BoolVar(&list.backwards, "backwards", false, "sort descending (newest first by default order)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one user"); err != nil {
				return err
			}
			if list.limit < 0 || list.from < 0 {
				return usagef("--limit and --from must not be negative")
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
			q := url.Values{"limit": {strconv.Itoa(list.limit)}, "from": {strconv.Itoa(list.from)}, "order_by": {list.orderBy}}
			if list.backwards {
				q.Set("dir", "b")
			}
			var resp struct {
				Media     []mediaEntry `json:"media"`
				NextToken *int         `json:"next_token"`
				Total     int          `json:"total"`
			}
			if printed, err := c.call(ctx, a, http.MethodGet, "/_synapse/admin/v1/users/"+pathEsc(id)+"/media", q, nil, &resp); printed || err != nil {
				return err
			}
			// Only local users have a list, so their server is the media's.
			_, server, _ := strings.Cut(id, ":")
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MXC\tTYPE\tSIZE\tNAME\tUPLOADED\tLAST ACCESS\tSTATE")
			for _, m := range resp.Media {
				state := "ok"
				switch {
				case m.QuarantinedBy != nil:
					state = "quarantined by " + *m.QuarantinedBy
				case m.Pending:
					state = "pending (no upload yet)"
				}
				var last int64
				if m.LastAccessTS != nil {
					last = *m.LastAccessTS
				}
				size := fmtSize(m.MediaLength)
				if m.Pending {
					size = "-"
				}
				fmt.Fprintf(tw, "mxc://%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", server, m.MediaID, orDash(m.MediaType), size,
					orDash(str(m.UploadName)), fmtTime(m.CreatedTS), fmtTime(last), state)
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d of %d files", len(resp.Media), resp.Total)
			if resp.NextToken != nil {
				fmt.Fprintf(c.stdout, " (next page: --from %d)", *resp.NextToken)
			}
			fmt.Fprintln(c.stdout)
			return nil
		},
	})

	for _, on := range []bool{true, false} {
		name, help, done := "media quarantine", "take a file out of circulation: every download answers 404 and the same content cannot be uploaded again", "quarantined"
		if !on {
			name, help, done = "media unquarantine", "put a quarantined file back into circulation", "released"
		}
		register(&command{
			name: name, args: "MXC_URI|SERVER/MEDIA_ID",
			help: help,
			run: func(c *cli, fs *flag.FlagSet, args []string) error {
				if err := wantArgs(args, 1, "one media reference"); err != nil {
					return err
				}
				server, mediaID, err := parseMXC(args[0])
				if err != nil {
					return err
				}
				a, err := c.client(true)
				if err != nil {
					return err
				}
				verb := "quarantine"
				if !on {
					verb = "unquarantine"
				}
				if printed, err := c.call(context.Background(), a, http.MethodPost, "/_synapse/admin/v1/media/"+verb+"/"+pathEsc(server)+"/"+pathEsc(mediaID), nil, map[string]any{}, nil); printed || err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "%s mxc://%s/%s\n", done, server, mediaID)
				return nil
			},
		})
	}

	register(&command{
		name: "media delete", args: "MXC_URI|SERVER/MEDIA_ID",
		help: "delete a local file with its thumbnails, for good",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one media reference"); err != nil {
				return err
			}
			server, mediaID, err := parseMXC(args[0])
			if err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp mediaDeleted
			if printed, err := c.call(context.Background(), a, http.MethodDelete, "/_synapse/admin/v1/media/"+pathEsc(server)+"/"+pathEsc(mediaID), nil, nil, &resp); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted mxc://%s/%s\n", server, mediaID)
			return nil
		},
	})

	var purge struct {
		before       string
		sizeGT       int64
		keepProfiles bool
	}
	register(&command{
		name: "media purge", args: "--before 30d|TIME|TS_MS [--size-gt BYTES] [--keep-profiles=false]",
		help: "delete every local file uploaded before a time (avatars are kept unless --keep-profiles=false)",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&purge.before, "before", "", "delete files uploaded before this: a duration back from now (30d, 12h), a time (2026-01-31, RFC 3339) or a Unix timestamp in ms (required)")
			fs.Int64Var(&purge.sizeGT, "size-gt", 0, "only files larger than this many bytes")
			fs.BoolVar(&purge.keepProfiles, "keep-profiles", true, "spare files in use as a user's avatar")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if purge.before == "" {
				return usagef("--before is required")
			}
			if purge.sizeGT < 0 {
				return usagef("--size-gt must not be negative")
			}
			before, err := parseBefore(purge.before, time.Now())
			if err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			q := url.Values{
				"before_ts":     {strconv.FormatInt(before, 10)},
				"size_gt":       {strconv.FormatInt(purge.sizeGT, 10)},
				"keep_profiles": {strconv.FormatBool(purge.keepProfiles)},
			}
			var resp mediaDeleted
			if printed, err := c.call(context.Background(), a, http.MethodPost, "/_synapse/admin/v1/media/delete", q, map[string]any{}, &resp); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted %d files uploaded before %s\n", resp.Total, time.UnixMilli(before).UTC().Format("2006-01-02 15:04:05Z"))
			return nil
		},
	})
}
