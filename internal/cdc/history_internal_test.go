package cdc

import "testing"

// TestParseHistory reads where a timeline ended from a history file.
func TestParseHistory(t *testing.T) {
	h := []byte("1\t0/3000158\tno recovery target specified\n\n2\t0/5000060\tno recovery target specified\n")
	for _, c := range []struct {
		from int32
		want string
		ok   bool
	}{{1, "0/3000158", true}, {2, "0/5000060", true}, {3, "0/0", false}} {
		lsn, ok, err := parseHistory(h, c.from)
		if err != nil || ok != c.ok || lsn.String() != c.want {
			t.Errorf("timeline %d: %s %v %v, want %s %v", c.from, lsn, ok, err, c.want, c.ok)
		}
	}
}

// TestLostKeys: the keys of lost transactions per table; a truncate makes
// the table's gap a whole-table compare.
func TestLostKeys(t *testing.T) {
	lost := []Lost{{Changes: []string{"public.a\tupdate\t1", "public.b\tinsert\t2\tx", "public.a\tdelete\t3"}},
		{Changes: []string{"public.b\ttruncate\t"}}}
	if got := lostKeys(lost, "public.a"); len(got) != 2 || got[0][0] != "1" || got[1][0] != "3" {
		t.Errorf("public.a: %v", got)
	}
	if got := lostKeys(lost, "public.b"); len(got) != 1 || len(got[0]) != 2 || got[0][1] != "x" {
		t.Errorf("public.b: %v", got)
	}
	if lostTruncate(lost, "public.a") || !lostTruncate(lost, "public.b") {
		t.Error("truncates")
	}
}
