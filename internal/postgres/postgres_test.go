package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tandem/internal/postgres/pgtest"
)

func exec(t *testing.T, dsn, sql string) error {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(context.Background(), sql)
	return err
}

func count(t *testing.T, dsn string) int {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFailoverAndRebuild walks a real primary and streaming standby through
// a switchover: fence, catch up, promote, and the old primary rebuilt to
// follow the new one.
func TestFailoverAndRebuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := pgtest.Primary(t)
	s := pgtest.Standby(t, p)
	if err := exec(t, p.DSN(), `CREATE TABLE orders (id int primary key); INSERT INTO orders SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}

	ps, err := Check(ctx, p.DSN())
	if err != nil || ps.InRecovery || ps.ReadOnly {
		t.Fatalf("primary status %+v, %v", ps, err)
	}
	ss, err := Check(ctx, s.DSN())
	if err != nil || !ss.InRecovery || !ss.Streaming {
		t.Fatalf("standby status %+v, %v", ss, err)
	}

	// A session open before the fence is ended by it.
	held, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(ctx)
	lsn, err := Fence(ctx, p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Exec(ctx, `INSERT INTO orders VALUES (1000)`); err == nil {
		t.Fatal("a session from before the fence could still write")
	}
	err = exec(t, p.DSN(), `INSERT INTO orders VALUES (1001)`)
	if err == nil || !strings.Contains(err.Error(), "read-only transaction") {
		t.Fatalf("fenced primary accepted a write: %v", err)
	}
	if _, err := Fence(ctx, p.DSN()); err != nil {
		t.Fatalf("fencing twice: %v", err)
	}
	if err := WaitReplay(ctx, s.DSN(), lsn); err != nil {
		t.Fatal(err)
	}

	if err := Promote(ctx, s.DSN()); err != nil {
		t.Fatal(err)
	}
	if err := Promote(ctx, s.DSN()); err != nil {
		t.Fatalf("promoting twice: %v", err)
	}
	if err := exec(t, s.DSN(), `INSERT INTO orders VALUES (101)`); err != nil {
		t.Fatalf("promoted standby refuses writes: %v", err)
	}
	if n := count(t, s.DSN()); n != 101 {
		t.Fatalf("promoted standby has %d rows, want 101", n)
	}

	// The old primary is a primary, fenced: it must be rebuilt first.
	if _, err := Following(ctx, p.DSN(), 1<<20); err == nil || !strings.Contains(err.Error(), "rebuild it as a standby") {
		t.Fatalf("Following on the old primary: %v", err)
	}
	p.Stop()
	p.BaseBackup(s)
	p.Start()
	if err := WaitReplay(ctx, p.DSN(), mustLSN(t, ctx, s.DSN())); err != nil {
		t.Fatal(err)
	}
	if _, err := Following(ctx, p.DSN(), 1<<20); err != nil {
		t.Fatal(err)
	}
	if n := count(t, p.DSN()); n != 101 {
		t.Fatalf("rebuilt standby has %d rows, want 101", n)
	}

	// A drill freezes replay and thaws it.
	if err := PauseReplay(ctx, p.DSN()); err != nil {
		t.Fatal(err)
	}
	if st, _ := Check(ctx, p.DSN()); !st.ReplayPaused {
		t.Fatalf("replay not paused: %+v", st)
	}
	if err := ResumeReplay(ctx, p.DSN()); err != nil {
		t.Fatal(err)
	}
}

func mustLSN(t *testing.T, ctx context.Context, dsn string) string {
	s, err := Check(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return s.LSN
}

func TestErrorsHideThePassword(t *testing.T) {
	ctx := context.Background()
	dsn := "postgres://app:hunter2secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"
	_, err := Check(ctx, dsn)
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("password in error: %v", err)
	}
	if got := Redact(dsn); strings.Contains(got, "hunter2secret") || !strings.Contains(got, "127.0.0.1:1") {
		t.Fatalf("Redact = %q", got)
	}
	if got := Redact("host=db port=5432 password=hunter2secret"); strings.Contains(got, "hunter2") {
		t.Fatalf("Redact = %q", got)
	}
}
