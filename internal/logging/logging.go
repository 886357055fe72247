// Package logging sets up log/slog and routes gomatrixserverlib's logrus
// output into it.
package logging

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
)

// Setup installs the default slog logger.
func Setup(level, format string, w io.Writer) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	var lvl slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	logrus.SetOutput(io.Discard)
	logrus.AddHook(bridge{l})
	return l
}

// bridge forwards logrus entries (from gomatrixserverlib) to slog.
type bridge struct{ l *slog.Logger }

func (bridge) Levels() []logrus.Level { return logrus.AllLevels }

func (b bridge) Fire(e *logrus.Entry) error {
	lvl := slog.LevelDebug
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		lvl = slog.LevelError
	case logrus.WarnLevel:
		lvl = slog.LevelWarn
	case logrus.InfoLevel:
		lvl = slog.LevelInfo
	}
	args := make([]any, 0, 2*len(e.Data)+2)
	args = append(args, "component", "gomatrixserverlib")
	for k, v := range e.Data {
		args = append(args, k, v)
	}
	b.l.Log(e.Context, lvl, e.Message, args...)
	return nil
}
