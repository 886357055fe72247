package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
)

type roomDetails struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	CanonicalAlias     *string `json:"canonical_alias"`
	Topic              *string `json:"topic"`
	JoinedMembers      int     `json:"joined_members"`
	JoinedLocalMembers int     `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int     `json:"state_events"`
	RoomType           *string `json:"room_type"`
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func init() {
	var list struct {
		search, orderBy string
		backwards       bool
		limit, from     int
	}
	register(&command{
		name: "room list", args: "[--search S] [--order-by KEY] [--backwards] [--limit N] [--from N]",
		help: "list rooms",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&list.search, "search", "", "only rooms whose name or alias contains this, or with this room ID")
			fs.StringVar(&list.orderBy, "order-by", "name", "name, joined_members, joined_local_members, state_events, version, creator, encryption, public, …")
			fs.BoolVar(&list.backwards, "backwards", false, "sort descending")
			fs.IntVar(&list.limit, "limit", 100, "page size")
			fs.IntVar(&list.from, "from", 0, "offset (next_batch of the previous page)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(list.limit)}, "from": {strconv.Itoa(list.from)}, "order_by": {list.orderBy}}
			if list.search != "" {
				q.Set("search_term", list.search)
			}
			if list.backwards {
				q.Set("dir", "b")
			}
			var resp struct {
				Rooms      []roomDetails `json:"rooms"`
				TotalRooms int           `json:"total_rooms"`
				NextBatch  *int          `json:"next_batch"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v1/rooms", q, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROOM ID\tNAME\tALIAS\tMEMBERS\tLOCAL\tENCRYPTED\tVERSION\tPUBLIC")
			for _, r := range resp.Rooms {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.RoomID, orDash(str(r.Name)), orDash(str(r.CanonicalAlias)),
					r.JoinedMembers, r.JoinedLocalMembers, yesNo(r.Encryption != nil), r.Version, yesNo(r.Public))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d of %d rooms", len(resp.Rooms), resp.TotalRooms)
			if resp.NextBatch != nil {
				fmt.Fprintf(c.stdout, " (next page: --from %d)", *resp.NextBatch)
			}
			fmt.Fprintln(c.stdout)
			return nil
		},
	})

	register(&command{
		name: "room show", args: "ROOM_ID",
		help: "show one room",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one room ID"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var r roomDetails
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v1/rooms/"+pathEsc(args[0]), nil, nil, &r); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			for _, kv := range [][2]string{
				{"room ID", r.RoomID}, {"name", orDash(str(r.Name))}, {"topic", orDash(str(r.Topic))}, {"alias", orDash(str(r.CanonicalAlias))},
				{"type", orDash(str(r.RoomType))}, {"version", r.Version}, {"creator", r.Creator},
				{"encryption", orDash(str(r.Encryption))}, {"join rule", orDash(str(r.JoinRules))},
				{"history visibility", orDash(str(r.HistoryVisibility))}, {"public", yesNo(r.Public)}, {"federated", yesNo(r.Federatable)},
				{"joined members", strconv.Itoa(r.JoinedMembers)}, {"local members", strconv.Itoa(r.JoinedLocalMembers)},
				{"state events", strconv.Itoa(r.StateEvents)},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
			}
			return tw.Flush()
		},
	})

	register(&command{
		name: "room members", args: "ROOM_ID",
		help: "list the users joined to a room",
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 1, "one room ID"); err != nil {
				return err
			}
			a, err := c.client(true)
			if err != nil {
				return err
			}
			var resp struct {
				Members []string `json:"members"`
				Total   int      `json:"total"`
			}
			if printed, err := c.call(context.Background(), a, http.MethodGet, "/_synapse/admin/v1/rooms/"+pathEsc(args[0])+"/members", nil, nil, &resp); printed || err != nil {
				return err
			}
			for _, m := range resp.Members {
				fmt.Fprintln(c.stdout, m)
			}
			fmt.Fprintf(c.stdout, "%d joined members\n", resp.Total)
			return nil
		},
	})
}
