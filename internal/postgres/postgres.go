// Package postgres runs the DR steps of a PostgreSQL primary with a
// streaming standby: it reads a server's role and replication position,
// fences an old primary so it accepts no more writes, waits for a standby
// to replay up to a position, promotes a standby and waits until it
// accepts writes, and checks that a rebuilt old primary follows the new
// one. Every operation is idempotent: running it again after a crash or on
// a server already in the wanted state does no harm.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Status is what a server says about its role and position.
type Status struct {
	InRecovery bool `json:"in_recovery"`
	// ReadOnly: new transactions are read-only (a fenced primary).
	ReadOnly bool `json:"read_only"`
	// LSN is the current WAL position of a primary, or the replay position
	// of a standby.
	LSN string `json:"lsn"`
	// Receive is a standby's last received position; Streaming says its
	// WAL receiver is connected.
	Receive   string `json:"receive,omitempty"`
	Streaming bool   `json:"streaming,omitempty"`
	// Lag is the WAL a standby received and has not replayed, in bytes.
	Lag int64 `json:"lag"`
	// ReplayPaused: a drill paused replay.
	ReplayPaused bool `json:"replay_paused,omitempty"`
}

// Redact removes the password from a DSN for messages.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxx")
		}
		u.RawQuery = ""
		return u.Redacted()
	}
	var keep []string
	for _, f := range strings.Fields(dsn) {
		if k, _, _ := strings.Cut(f, "="); k == "host" || k == "port" || k == "dbname" || k == "user" {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// Connect opens one connection; errors name the server without secrets.
// params are run-time parameters to set (replication=database opens a
// logical replication connection).
func Connect(ctx context.Context, dsn string, params ...string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn %s: cannot be parsed: check its form (postgres://user@host:port/db or key=value pairs)", Redact(dsn))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	for i := 0; i+1 < len(params); i += 2 {
		cfg.RuntimeParams[params[i]] = params[i+1]
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres %s:%d: %w", cfg.Host, cfg.Port, Scrub(err, dsn))
	}
	return c, nil
}

// Scrub keeps a password in the DSN out of an error's text.
func Scrub(err error, dsn string) error {
	cfg, perr := pgx.ParseConfig(dsn)
	if perr != nil || cfg.Password == "" || !strings.Contains(err.Error(), cfg.Password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), cfg.Password, "xxx"))
}

func with(ctx context.Context, dsn string, f func(*pgx.Conn) error) error {
	c, err := Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return f(c)
}

// Check reads a server's status.
func Check(ctx context.Context, dsn string) (Status, error) {
	var s Status
	err := with(ctx, dsn, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'`).Scan(&s.InRecovery, &s.ReadOnly); err != nil {
			return err
		}
		if !s.InRecovery {
			return c.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s.LSN)
		}
		var receive *string
		err := c.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text,
			coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint,
			pg_is_wal_replay_paused(),
			exists (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')`).
			Scan(&s.LSN, &receive, &s.Lag, &s.ReplayPaused, &s.Streaming)
		if receive != nil {
			s.Receive = *receive
		}
		return err
	})
	return s, err
}

// Behind is how many WAL bytes standby has yet to replay to reach lsn.
func Behind(ctx context.Context, standbyDSN, lsn string) (int64, error) {
	var n int64
	err := with(ctx, standbyDSN, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT greatest(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint`, lsn).Scan(&n)
	})
	return n, err
}

// Fence makes a primary refuse writes: new transactions default to
// read-only (persisted with ALTER SYSTEM, so it holds after a restart), and
// every other client session is ended so none keeps writing. It returns the
// primary's WAL position after the fence: once the standby has replayed up
// to it, it has everything. A server already in recovery is left alone.
func Fence(ctx context.Context, dsn string) (lsn string, err error) {
	err = with(ctx, dsn, func(c *pgx.Conn) error {
		var rec bool
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err != nil {
			return err
		}
		if rec {
			return nil
		}
		for _, q := range []string{
			`ALTER SYSTEM SET default_transaction_read_only = on`,
			`SELECT pg_reload_conf()`,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				return fmt.Errorf("fence: %s: %w", q, err)
			}
		}
		// A WAL switch makes the position final and ships it at once.
		return c.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn)
	})
	return lsn, err
}

// WaitReplay waits until the standby has replayed up to lsn.
func WaitReplay(ctx context.Context, standbyDSN, lsn string) error {
	for {
		n, err := Behind(ctx, standbyDSN, lsn)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("standby still %d bytes behind %s: %w", n, lsn, err)
		}
	}
}

// Promote promotes a standby and waits until it accepts writes. On a server
// already promoted it only clears a fence and checks. A promotion whose
// wait replay cancelled (a conflict with recovery, SQLSTATE 40001) is
// asked again.
func Promote(ctx context.Context, dsn string) error {
	var err error
	for range 5 {
		if err = promote(ctx, dsn); !conflict(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := Unfence(ctx, dsn); err != nil {
		return err
	}
	return WaitWritable(ctx, dsn)
}

// conflict reports a statement cancelled by a conflict with recovery.
func conflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40001"
}

func promote(ctx context.Context, dsn string) error {
	return with(ctx, dsn, func(c *pgx.Conn) error {
		var rec bool
		if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err != nil {
			return err
		}
		if rec {
			var paused bool
			if err := c.QueryRow(ctx, `SELECT pg_is_wal_replay_paused()`).Scan(&paused); err == nil && paused {
				if _, err := c.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
					return err
				}
			}
			var ok bool
			if err := c.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok); err != nil {
				return fmt.Errorf("pg_promote: %w", err)
			}
			if !ok {
				return errors.New("pg_promote did not finish within 60s")
			}
		}
		return nil
	})
}

// Unfence removes a fence set by Fence (a rebuilt or promoted server must
// accept writes when it is primary again).
func Unfence(ctx context.Context, dsn string) error {
	return with(ctx, dsn, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `ALTER SYSTEM RESET default_transaction_read_only`); err != nil {
			return err
		}
		_, err := c.Exec(ctx, `SELECT pg_reload_conf()`)
		return err
	})
}

// WaitWritable waits until a new session on the server can write.
func WaitWritable(ctx context.Context, dsn string) error {
	for {
		s, err := Check(ctx, dsn)
		if err == nil && !s.InRecovery && !s.ReadOnly {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("%s does not accept writes yet (in recovery %v, read-only %v): %w", Redact(dsn), s.InRecovery, s.ReadOnly, err)
		}
	}
}

// Following checks that a server is a streaming standby (after a failover,
// the old primary rebuilt to follow the new one) within maxLag bytes.
func Following(ctx context.Context, dsn string, maxLag int64) (Status, error) {
	s, err := Check(ctx, dsn)
	switch {
	case err != nil:
		return s, err
	case !s.InRecovery:
		return s, fmt.Errorf("%s is not in recovery: it is a primary; rebuild it as a standby of the new primary (pg_basebackup -R or pg_rewind) and try again", Redact(dsn))
	case !s.Streaming:
		return s, fmt.Errorf("%s is in recovery but not streaming from a primary: check primary_conninfo", Redact(dsn))
	case s.Lag > maxLag:
		return s, fmt.Errorf("%s is %d bytes behind what it received (at most %d)", Redact(dsn), s.Lag, maxLag)
	}
	return s, nil
}

// PauseReplay and ResumeReplay freeze and thaw a standby for a drill.
func PauseReplay(ctx context.Context, dsn string) error {
	return with(ctx, dsn, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SELECT pg_wal_replay_pause() WHERE pg_is_in_recovery()`)
		return err
	})
}

func ResumeReplay(ctx context.Context, dsn string) error {
	return with(ctx, dsn, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SELECT pg_wal_replay_resume() WHERE pg_is_in_recovery()`)
		return err
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
