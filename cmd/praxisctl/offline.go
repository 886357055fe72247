package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"praxis/federation/keyring"
	"praxis/internal/config"
	"praxis/internal/storage"
)

func init() {
	var keygen struct {
		out   string
		force bool
	}
	register(&command{
		name: "keygen", args: "[--out PATH] [--force]", offline: true,
		help: "generate a server signing key (without --out the key file is printed)",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&keygen.out, "out", "", "write the key file here (mode 0600)")
			fs.BoolVar(&keygen.force, "force", false, "overwrite an existing key file (the old key is lost: other servers will distrust events it signed until they refetch keys)")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			k, err := keyring.Generate()
			if err != nil {
				return err
			}
			if keygen.out == "" {
				_, err := c.stdout.Write(k.Marshal())
				return err
			}
			if _, err := os.Stat(keygen.out); err == nil && !keygen.force {
				return fmt.Errorf("%s exists; refusing to replace a signing key without --force", keygen.out)
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := keyring.WriteFile(keygen.out, k); err != nil {
				return err
			}
			pub := base64.RawStdEncoding.EncodeToString(k.PublicKey())
			if c.json {
				return c.printValue(map[string]string{"path": keygen.out, "key_id": k.KeyID, "public_key": pub})
			}
			fmt.Fprintf(c.stdout, "wrote %s\nkey ID: %s\npublic key: %s\n", keygen.out, k.KeyID, pub)
			return nil
		},
	})

	var checkConfig struct{ file string }
	register(&command{
		name: "check-config", args: "--config FILE", offline: true,
		help: "load and validate a config file (with the PRAXIS_* environment applied); exit 1 naming every bad key",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&checkConfig.file, "config", "", "the config file")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if checkConfig.file == "" {
				return usagef("--config FILE is required")
			}
			if _, err := os.Stat(checkConfig.file); err != nil {
				return fmt.Errorf("config file: %w", err)
			}
			cfg, err := config.Load(config.Flags{ConfigFile: checkConfig.file}, os.Environ())
			if err != nil {
				// Validate joins one error per key; print each on its own
				// line, then fail with a one-line summary.
				problems := strings.Split(strings.TrimSpace(err.Error()), "\n")
				for _, p := range problems {
					fmt.Fprintf(c.stdout, "%s: %s\n", checkConfig.file, p)
				}
				return fmt.Errorf("%s: %d problem(s)", checkConfig.file, len(problems))
			}
			fmt.Fprintf(c.stdout, "%s: OK (server_name %s, database %s)\n", checkConfig.file, cfg.ServerName, engineOf(cfg.Database))
			return nil
		},
	})

	var migrate struct{ file string }
	register(&command{
		name: "migrate", args: "--config FILE", offline: true,
		help: "open the configured database and bring its schema up to date",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&migrate.file, "config", "", "the config file naming the database")
		},
		run: func(c *cli, fs *flag.FlagSet, args []string) error {
			if err := wantArgs(args, 0, "no arguments"); err != nil {
				return err
			}
			if migrate.file == "" {
				return usagef("--config FILE is required")
			}
			cfg, err := config.Load(config.Flags{ConfigFile: migrate.file}, os.Environ())
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			return c.migrate(context.Background(), cfg.Database)
		},
	})
}

func engineOf(dsn string) string {
	if strings.HasPrefix(dsn, "postgres") {
		return "postgres"
	}
	return dsn
}

// migrate runs the migrations on dsn, printing one line per migration.
func (c *cli) migrate(ctx context.Context, dsn string) error {
	db, err := storage.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	before := schemaVersion(ctx, db)
	latest := storage.LatestSchemaVersion()
	fmt.Fprintf(c.stdout, "database: %s, schema version %d, this praxisctl knows up to %d\n", db.Engine(), before, latest)
	// storage.Migrate reports each migration through slog; show those
	// records as progress lines while it runs.
	prev := slog.Default()
	slog.SetDefault(slog.New(progressHandler{w: c.stdout}))
	err = db.Migrate(ctx)
	slog.SetDefault(prev)
	if err != nil {
		return err
	}
	after := schemaVersion(ctx, db)
	if after == before {
		fmt.Fprintln(c.stdout, "schema is up to date")
	} else {
		fmt.Fprintf(c.stdout, "schema migrated from version %d to %d\n", before, after)
	}
	return nil
}

// schemaVersion is the highest applied migration, 0 for a fresh database.
func schemaVersion(ctx context.Context, db *storage.DB) int {
	var v int
	if err := db.QueryRowWrite(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0 // no schema_migrations table yet
	}
	return v
}

// progressHandler prints "schema migrated" records as "  applied NAME".
type progressHandler struct{ w io.Writer }

func (h progressHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h progressHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h progressHandler) WithGroup(string) slog.Handler            { return h }
func (h progressHandler) Handle(_ context.Context, r slog.Record) error {
	name := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "migration" {
			name = a.Value.String()
		}
		return true
	})
	if name != "" {
		_, err := fmt.Fprintf(h.w, "  applied %s\n", name)
		return err
	}
	if r.Level >= slog.LevelWarn {
		_, err := fmt.Fprintf(h.w, "  %s: %s\n", r.Level, r.Message)
		return err
	}
	return nil
}
