// Command praxisctl administers a Praxis homeserver.
//
// Online commands talk to the admin API of a running server (--server,
// default http://127.0.0.1:8008) with an admin access token (--token,
// --token-file or PRAXIS_ADMIN_TOKEN):
//
//	praxisctl user create|list|show|deactivate|reset-password|make-admin
//	praxisctl room list|show|members
//	praxisctl token create|list|show|delete
//	praxisctl audit list|verify
//	praxisctl media list|quarantine|unquarantine|delete|purge
//	praxisctl turn test
//	praxisctl practice|staff|couple … (the care domain, see docs/care.md)
//	praxisctl login USER
//
// Offline commands work on files and the database directly:
//
//	praxisctl keygen [--out PATH]
//	praxisctl check-config --config FILE
//	praxisctl migrate --config FILE
//
// The first admin of a fresh node is created with the shared secret:
// praxisctl user create alice --admin --config praxis.yaml. See
// docs/praxisctl.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exit codes
const (
	exitOK    = 0
	exitFail  = 1 // the operation failed (server error, bad config, …)
	exitUsage = 2 // the command line was wrong
)

// usageError marks a command-line mistake (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// cli is one invocation: global options and where output goes.
type cli struct {
	server    string
	token     string
	tokenFile string
	json      bool
	// serverSet: --server or $PRAXIS_ADMIN_URL chose the server, so a
	// config file must not override it.
	serverSet bool
	stdout    io.Writer
	stderr    io.Writer
}

// command is one subcommand: name path, one-line help, and its body.
type command struct {
	name    string
	args    string
	help    string
	offline bool
	run     func(c *cli, fs *flag.FlagSet, args []string) error
	flags   func(fs *flag.FlagSet) // registers the command's own flags
}

var commands []*command

func register(cmd *command) { commands = append(commands, cmd) }

// commonFlags are accepted before the command and after it.
func (c *cli) commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", c.server, "base URL of the homeserver's admin API: its client listener, or admin.listen when set (default $PRAXIS_ADMIN_URL)")
	fs.StringVar(&c.token, "token", c.token, "admin access token (default: $PRAXIS_ADMIN_TOKEN)")
	fs.StringVar(&c.tokenFile, "token-file", c.tokenFile, "file holding the admin access token")
	fs.BoolVar(&c.json, "json", c.json, "print the server's JSON answer instead of a table")
}

// run is the whole program: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{server: "http://127.0.0.1:8008", stdout: stdout, stderr: stderr}
	if u := os.Getenv("PRAXIS_ADMIN_URL"); u != "" {
		c.server, c.serverSet = u, true
	}
	global := flag.NewFlagSet("praxisctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	c.commonFlags(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage()
			return exitOK
		}
		fmt.Fprintf(stderr, "praxisctl: %v\n", err)
		return exitUsage
	}
	global.Visit(func(f *flag.Flag) { c.serverSet = c.serverSet || f.Name == "server" })
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" {
		c.usage()
		if len(rest) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, rest := findCommand(rest)
	if cmd == nil {
		var subs []string
		for _, c := range commands {
			if group, sub, ok := strings.Cut(c.name, " "); ok && group == rest[0] {
				subs = append(subs, sub)
			}
		}
		if len(subs) > 0 {
			slices.Sort(subs)
			fmt.Fprintf(stderr, "praxisctl %s: want a subcommand: %s\n", rest[0], strings.Join(subs, ", "))
			return exitUsage
		}
		fmt.Fprintf(stderr, "praxisctl: unknown command %q (praxisctl help lists them)\n", strings.Join(rest, " "))
		return exitUsage
	}
	fs := flag.NewFlagSet("praxisctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if !cmd.offline {
		c.commonFlags(fs)
	} else {
		fs.BoolVar(&c.json, "json", c.json, "print JSON")
	}
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	pos, err := parseInterspersed(fs, rest)
	fs.Visit(func(f *flag.Flag) { c.serverSet = c.serverSet || f.Name == "server" })
	if errors.Is(err, flag.ErrHelp) {
		c.commandUsage(cmd, fs)
		return exitOK
	}
	if err != nil {
		err = &usageError{err.Error()}
	} else {
		err = cmd.run(c, fs, pos)
	}
	if err != nil {
		fmt.Fprintf(stderr, "praxisctl %s: %s\n", cmd.name, oneLine(err.Error()))
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "usage: praxisctl %s %s (praxisctl %s --help for flags)\n", cmd.name, cmd.args, cmd.name)
			return exitUsage
		}
		return exitFail
	}
	return exitOK
}

// oneLine keeps failure output to one line, as scripts expect.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// findCommand matches the longest command name at the start of args.
func findCommand(args []string) (*command, []string) {
	var best *command
	bestLen := 0
	for _, cmd := range commands {
		words := strings.Fields(cmd.name)
		if len(words) <= len(args) && len(words) > bestLen && strings.Join(args[:len(words)], " ") == cmd.name {
			best, bestLen = cmd, len(words)
		}
	}
	if best == nil {
		return nil, args
	}
	return best, args[bestLen:]
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("user create alice --admin").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil // everything after "--" is positional
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *cli) usage() {
	w := c.stdout
	fmt.Fprintln(w, "praxisctl administers a Praxis homeserver.")
	fmt.Fprintln(w, "\nusage: praxisctl [--server URL] [--token T | --token-file F] [--json] COMMAND [ARGS] [FLAGS]")
	sorted := slices.Clone(commands)
	slices.SortFunc(sorted, func(a, b *command) int { return strings.Compare(a.name, b.name) })
	for _, offline := range []bool{false, true} {
		if offline {
			fmt.Fprintln(w, "\nCommands (offline):")
		} else {
			fmt.Fprintln(w, "\nCommands (online, through the admin API):")
		}
		for _, cmd := range sorted {
			if cmd.offline == offline {
				fmt.Fprintf(w, "  %-20s %s\n", cmd.name, cmd.help)
			}
		}
	}
	fmt.Fprintln(w, "\nThe admin token comes from --token, --token-file or $PRAXIS_ADMIN_TOKEN.")
	fmt.Fprintln(w, "praxisctl COMMAND --help shows a command's flags; put -- before arguments that start with -.")
}

func (c *cli) commandUsage(cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(c.stdout, "usage: praxisctl %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.args, cmd.help)
	fs.SetOutput(c.stdout)
	fs.PrintDefaults()
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, n int, what string) error {
	if len(args) != n {
		return usagef("want %s, got %d argument(s)", what, len(args))
	}
	return nil
}
