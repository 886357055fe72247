package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"
)

type auditEntry struct {
	Seq       int64           `json:"seq"`
	TS        int64           `json:"ts"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	Params    json.RawMessage `json:"params"`
	Result    string          `json:"result"`
	RequestID string          `json:"request_id"`
}

func init() {
	var list struct {
		since, until, actor, action string
		target, practice            string
		limit                       int
		from                        int64
		newest                      bool
	}
	register(&command{
		name: "audit list", args: "[--since 7d|TIME] [--until TIME] [--actor U] [--action A] [--target T] [--practice P] [--newest-first] [--limit N] [--from SEQ]",
		help: "show the audit log of admin actions",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&list.since, "since", "", "only entries after this: a duration back from now (7d, 12h) or a time")
			fs.StringVar(&list.until, "until", "", "only entries before this")
			fs.StringVar(&list.actor, "actor", "", "only actions of this user ID")
			fs.StringVar(&list.action, "action", "", "only this action (e.g. user.deactivate)")
			fs.StringVar(&list.target, "target", "", "only actions on this target (e.g. a user ID)")
			fs.StringVar(&list.practice, "practice", "", "only entries of this practice")
			fs.BoolVar(&list.newest, "newest-first", false, "newest entries first")
			fs.IntVar(&list.limit, "limit", 100, "page size")
			fs.Int64Var(&list.from, "from", 0, "start at this entry (next_token of the previous page)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(list.limit)}}
			now := time.Now()
			for param, v := range map[string]string{"since": list.since, "until": list.until} {
				if v == "" {
					continue
				}
				t, err := parseWhen(v, now, -1)
				if err != nil {
					return err
				}
				q.Set(param, strconv.FormatInt(t.UnixMilli(), 10))
			}
			if list.from > 0 {
				q.Set("from", strconv.FormatInt(list.from, 10))
			}
			if list.actor != "" {
				q.Set("actor", list.actor)
			}
			if list.action != "" {
				q.Set("action", list.action)
			}
			if list.target != "" {
				q.Set("target", list.target)
			}
			if list.practice != "" {
				q.Set("practice", list.practice)
			}
			if list.newest {
				q.Set("dir", "b")
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Entries   []auditEntry `json:"entries"`
				NextToken string       `json:"next_token"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_praxis/admin/v1/audit", q, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tRESULT\tPARAMS")
			for _, e := range resp.Entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, fmtTime(e.TS), e.Actor, e.Action, e.Target, e.Result, e.Params)
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d entries", len(resp.Entries))
			if resp.NextToken != "" {
				fmt.Fprintf(c.stdout, " (next page: --from %s)", resp.NextToken)
			}
			fmt.Fprintln(c.stdout)
			return nil
		},
	})

	register(&command{
		name: "audit verify", args: "",
		help: "check the audit log's hash chain; exit 1 if a row was altered or removed",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var v struct {
				OK       bool   `json:"ok"`
				Rows     int64  `json:"rows"`
				HeadSeq  int64  `json:"head_seq"`
				HeadHash string `json:"head_hash"`
				BadSeq   int64  `json:"bad_seq"`
				Problem  string `json:"problem"`
			}
			raw, err := a.do(context.Background(), http.MethodGet, "/_praxis/admin/v1/audit/verify", nil, nil, &v)
			if err != nil {
				return err
			}
			if c.json {
				if err := c.printJSON(raw); err != nil {
					return err
				}
			} else if v.OK {
				fmt.Fprintf(c.stdout, "audit log intact: %d entries, head #%d %s\n", v.Rows, v.HeadSeq, v.HeadHash)
			}
			if !v.OK {
				return fmt.Errorf("audit log is NOT intact: %s", v.Problem)
			}
			return nil
		},
	})
}
