package stream_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"tandem/internal/postgres/pgtest"
	"tandem/internal/stream"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// TestPostgresSink: on a real PostgreSQL, an event takes effect once
// whoever delivers it, a lower epoch is refused once a higher one
// fenced the sink, a failing statement names the event and applies
// nothing of its batch, and a delivery stalled inside its transaction
// longer than the grace is ended by the server.
func TestPostgresSink(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Primary(t)
	db, err := sql.Open("pgx", pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE effects (id TEXT, body TEXT, epoch BIGINT, region TEXT, pos BIGINT, CHECK (body <> 'poison'))`); err != nil {
		t.Fatal(err)
	}
	sk, err := stream.OpenSQL(ctx, "postgres", pg.DSN(), "orders", []string{
		`INSERT INTO effects (id, body, epoch, region, pos) VALUES ($1, $2, $3, $4, $5)`})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	sk.Grace = 300 * time.Millisecond
	east := stream.Delivery{Epoch: 1, Region: "east", Consumer: "east/orders"}
	west := stream.Delivery{Epoch: 2, Region: "west", Consumer: "west/orders"}
	evs := []stream.Event{{ID: "a", Data: []byte("1"), Pos: 1}, {ID: "b", Data: []byte("2"), Pos: 2}}
	if r, err := sk.Deliver(ctx, east, evs, nil); err != nil || r.Applied != 2 {
		t.Fatalf("first delivery: %+v %v", r, err)
	}
	// West delivers the same events (at its own positions) and a new one.
	r, err := sk.Deliver(ctx, west, []stream.Event{{ID: "b", Pos: 1}, {ID: "a", Pos: 2}, {ID: "c", Data: []byte("3"), Pos: 3}}, nil)
	if err != nil || r.Applied != 1 || r.Duplicates != 2 {
		t.Fatalf("west: %+v %v", r, err)
	}
	if _, err := sk.Deliver(ctx, east, []stream.Event{{ID: "d", Pos: 3}}, nil); !errors.Is(err, stream.ErrStale) {
		t.Fatalf("east after west: %v", err)
	}
	_, err = sk.Deliver(ctx, west, []stream.Event{{ID: "e", Pos: 4}, {ID: "f", Data: []byte("poison"), Pos: 5}}, nil)
	if err == nil || !strings.Contains(err.Error(), "event f (position 5 in west): statement 1") {
		t.Fatalf("a failing statement: %v", err)
	}
	// A delivery whose check stalls past the grace: the server ends the
	// transaction, nothing of it is applied.
	_, err = sk.Deliver(ctx, west, []stream.Event{{ID: "g", Pos: 4}}, func(context.Context) error {
		time.Sleep(time.Second)
		return nil
	})
	if err == nil {
		t.Fatal("a transaction stalled past the grace committed")
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM effects`).Scan(&n)
	st, _ := sk.Stats(ctx)
	if n != 3 || st.Applied != 3 || st.Duplicates != 2 || st.Epoch != 2 || st.Positions["west/orders"] != 3 || st.Positions["east/orders"] != 2 {
		t.Fatalf("%d effects, stats %+v", n, st)
	}
}
