package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"text/tabwriter"
)

func init() {
	register(&command{
		name: "user devices", args: "USER",
		help: "list a user's devices (sessions)",
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
			var resp struct {
				Devices []struct {
					DeviceID    string  `json:"device_id"`
					DisplayName *string `json:"display_name"`
					LastSeenIP  *string `json:"last_seen_ip"`
					LastSeenTS  int64   `json:"last_seen_ts"`
				} `json:"devices"`
				Total int `json:"total"`
			}
			if printed, err := c.call(ctx, a, http.MethodGet, "/_synapse/admin/v2/users/"+pathEsc(id)+"/devices", nil, nil, &resp); printed || err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE ID\tNAME\tLAST SEEN\tLAST IP")
			for _, d := range resp.Devices {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.DeviceID, orDash(str(d.DisplayName)), fmtTime(d.LastSeenTS), orDash(str(d.LastSeenIP)))
			}
			tw.Flush()
			fmt.Fprintf(c.stdout, "%d devices\n", resp.Total)
			return nil
		},
	})

	var logout struct{ all bool }
	register(&command{
		name: "user logout", args: "USER (-- DEVICE_ID... | --all)",
		help: "log a user out remotely: the named devices (after --, as an ID may start with -), or every device with --all",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&logout.all, "all", false, "log out every device of the user")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if len(args) == 0 {
				return usagef("want a user and device IDs (or --all)")
			}
			if logout.all == (len(args) > 1) {
				return usagef("give device IDs or --all, not both and not neither")
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
			devices := args[1:]
			if logout.all {
				var resp struct {
					Devices []struct {
						DeviceID string `json:"device_id"`
					} `json:"devices"`
				}
				if _, err := a.do(ctx, http.MethodGet, "/_synapse/admin/v2/users/"+pathEsc(id)+"/devices", nil, nil, &resp); err != nil {
					return err
				}
				devices = []string{}
				for _, d := range resp.Devices {
					devices = append(devices, d.DeviceID)
				}
			}
			if printed, err := c.call(ctx, a, http.MethodPost, "/_synapse/admin/v2/users/"+pathEsc(id)+"/delete_devices", nil, map[string]any{"devices": devices}, nil); printed || err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "logged out %d device(s) of %s\n", len(devices), id)
			return nil
		},
	})

	register(&command{
		name: "user rooms", args: "USER",
		help: "list the rooms a user is joined to",
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
			var resp struct {
				JoinedRooms []string `json:"joined_rooms"`
				Total       int      `json:"total"`
			}
			if printed, err := c.call(ctx, a, http.MethodGet, "/_synapse/admin/v1/users/"+pathEsc(id)+"/joined_rooms", nil, nil, &resp); printed || err != nil {
				return err
			}
			for _, r := range resp.JoinedRooms {
				fmt.Fprintln(c.stdout, r)
			}
			fmt.Fprintf(c.stdout, "%d joined rooms\n", resp.Total)
			return nil
		},
	})
}
