// Command praxis runs a Praxis homeserver.
//
//	praxis [--config FILE] [--server-name NAME] [--data-dir DIR]
//	       [--listen-client HOST:PORT] [--listen-federation HOST:PORT]
//
// Flags override PRAXIS_* environment variables, which override the config
// file, which overrides the built-in defaults. If --config names a file
// that does not exist yet, a commented default config is written there.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"praxis/internal/config"
	"praxis/internal/homeserver"
	"praxis/internal/logging"
)

func main() {
	var f config.Flags
	flag.StringVar(&f.ConfigFile, "config", "", "config file (YAML); created with defaults if missing")
	flag.StringVar(&f.ServerName, "server-name", "", "server name (host or host:port)")
	flag.StringVar(&f.DataDir, "data-dir", "", "data directory (SQLite database, signing key, media)")
	flag.StringVar(&f.ListenClient, "listen-client", "", "client API listen address")
	flag.StringVar(&f.ListenFederation, "listen-federation", "", "federation API listen address")
	flag.Parse()

	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "praxis:", err)
		os.Exit(1)
	}
}

func run(f config.Flags) error {
	start := time.Now()
	if f.ConfigFile != "" {
		dataDir := f.DataDir
		if dataDir == "" {
			dataDir = os.Getenv("PRAXIS_DATA_DIR")
		}
		created, err := config.WriteDefaultFile(f.ConfigFile, dataDir)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(os.Stderr, "praxis: wrote a commented default config to %s\n", f.ConfigFile)
		}
	}
	cfg, err := config.Load(f, os.Environ())
	if err != nil {
		return err
	}
	logging.Setup(cfg.Log.Level, cfg.Log.Format, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := homeserver.New(ctx, cfg, homeserver.Options{})
	if err != nil {
		return err
	}
	// PRAXIS_CPUPROFILE is a developer aid for make bench: it records a CPU
	// profile from start to shutdown.
	if path := os.Getenv("PRAXIS_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	slog.Info("praxis ready", "server_name", cfg.ServerName, "database", srv.DB.Engine().String(), "startup_ms", time.Since(start).Milliseconds())
	return srv.Run(ctx)
}
