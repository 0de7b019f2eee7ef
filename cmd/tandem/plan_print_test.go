package main

import (
	"strings"
	"testing"
	"time"

	"tandem/internal/plan"
)

// An error of several lines (one per region) prints every line in the
// column of the first, in the prechecks and in an execution.
func TestErrorsOfSeveralLinesStayInColumn(t *testing.T) {
	var b strings.Builder
	prechecks{Plan: "failback", From: "standby", To: "primary", Checks: []checkResult{
		{ID: "check.stream:orders", Output: "the sink answers", Error: "precheck failed: in standby: down\nprecheck failed: in primary: down"},
	}}.print(&b)
	want := `prechecks of failback standby -> primary
  FAIL check.stream:orders
         the sink answers
         precheck failed: in standby: down
         precheck failed: in primary: down
`
	if b.String() != want {
		t.Errorf("prechecks:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	now := time.Now()
	printExecution(&b, &plan.Execution{ID: "x", Type: "failover", State: plan.Failed, Groups: []plan.GroupRecord{{Name: "prechecks", State: plan.Failed, Steps: []*plan.StepRecord{
		{ID: "check.stream:orders", State: plan.Failed, Started: &now, Ended: &now, Error: "in standby: down\nin primary: down"},
	}}}})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	last, prev := lines[len(lines)-1], lines[len(lines)-2]
	if !strings.HasSuffix(prev, "in standby: down") || strings.TrimSpace(last) != "in primary: down" || strings.Index(last, "in") != strings.Index(prev, "in standby") {
		t.Errorf("execution:\n%s", b.String())
	}
}
