package member

import (
	"context"
	"strings"
	"testing"

	"tandem/internal/config"
	"tandem/internal/plan"
)

type claims struct{ kinds []string }

func (claims) Name() string                                { return "claims" }
func (claims) Section() config.Section                     { return config.Section{Key: "claims_test", Ref: "claims_test"} }
func (claims) Steps(*Env, *plan.Plan, string) []Placed     { return nil }
func (c claims) StepKinds() []string                       { return c.kinds }
func (claims) Do(context.Context, *Exec) error             { return nil }
func (claims) Status(context.Context, *Env, string) Report { return Report{} }

// TestRegisterRefusesOwnKinds: a kind that claims a step kind of the
// protection group's own (a user step's precheck, the lease steps) would
// take it over in every plan; Register refuses it.
func TestRegisterRefusesOwnKinds(t *testing.T) {
	for _, k := range plan.OwnKinds {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), "the protection group's own") {
					t.Errorf("step kind %s: recovered %v", k, r)
				}
			}()
			Register(claims{kinds: []string{k}})
		}()
	}
	if ofStep(plan.CheckEndpoint) != nil {
		t.Fatal("a kind took over check.endpoint")
	}
}
