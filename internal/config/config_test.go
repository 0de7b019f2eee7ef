package config

import "testing"

func TestExpandSkipsComments(t *testing.T) {
	t.Setenv("TANDEM_TEST_DIR", "/data")
	got, err := expand([]byte("# use ${UNSET_IN_COMMENT} here\nstate: ${TANDEM_TEST_DIR}/x # ${ALSO_UNSET}\nname: \"a#${TANDEM_TEST_DIR}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# use ${UNSET_IN_COMMENT} here\nstate: /data/x # ${ALSO_UNSET}\nname: \"a#/data\"\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestFixedSections: without any member kind registered, the fixed
// sections load, and a kind's section is an unknown key with its line.
func TestFixedSections(t *testing.T) {
	c, err := Parse([]byte(`
regions:
  - {name: east, state: /tmp/e/.tandem}
  - {name: west, state: /tmp/w/.tandem}
witness: {url: /tmp/witness}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 5s}
`))
	if err != nil || len(c.ProtectionGroups) != 1 || c.ProtectionGroups[0].HasMembers() {
		t.Fatalf("%+v %v", c, err)
	}
	_, err = Parse([]byte("regions:\n  - {name: east, state: /tmp/e}\nreplicaton: []\n"))
	if err == nil || err.Error() != "line 3: replicaton: unknown key" {
		t.Fatalf("unknown section: %v", err)
	}
}
