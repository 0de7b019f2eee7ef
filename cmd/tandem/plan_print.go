package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"tandem/internal/plan"
)

func printPlan(w io.Writer, p *plan.Plan, asJSON bool) error {
	if asJSON {
		return writeJSON(w, p)
	}
	fmt.Fprintf(w, "%s of %s: %s -> %s (records in %s)\n", p.Type, p.ProtectionGroup, p.From, p.To, p.Home)
	for i, g := range p.Groups {
		user := ""
		if g.User {
			user = " (user)"
		}
		fmt.Fprintf(w, "%d. %s%s\n", i+1, g.Name, user)
		for _, s := range g.Steps {
			var notes []string
			notes = append(notes, "timeout "+s.Timeout.String())
			if s.OnError != "stop" {
				notes = append(notes, "on error "+s.OnError)
			}
			if s.Retries > 0 {
				notes = append(notes, fmt.Sprintf("retries %d", s.Retries))
			}
			if s.Disabled {
				notes = append(notes, "DISABLED")
			}
			fmt.Fprintf(w, "   %-36s %-8s %s [%s]\n", s.ID, s.Region, s.Title, strings.Join(notes, ", "))
		}
	}
	return nil
}

// progressPrinter prints each step's changes of state; the commands it
// prints are ex's, ready to paste.
func progressPrinter(w io.Writer, ex *plan.Executor) func(*plan.Execution) {
	var mu sync.Mutex
	seen := map[string]string{}
	return func(x *plan.Execution) {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range x.Groups {
			for _, s := range g.Steps {
				if seen[s.ID] == s.State || s.State == plan.Queued {
					continue
				}
				seen[s.ID] = s.State
				switch s.State {
				case plan.Running, plan.Waiting:
					fmt.Fprintf(w, "  %-10s %-14s %s\n", g.Name, s.State, s.ID)
					if s.State == plan.Waiting {
						fmt.Fprintf(w, "             approve with: %s\n", strings.Trim(ex.Command("approve", x.ID, s.ID), "`"))
					}
				default:
					fmt.Fprintf(w, "  %-10s %-14s %s (%.1fs)\n", g.Name, s.State, s.ID, s.Seconds())
					printLines(w, "             ", s.Log)
					if s.Error != "" {
						printLines(w, "             ", "error: "+s.Error)
					}
				}
			}
		}
	}
}

func printExecution(w io.Writer, x *plan.Execution) {
	fmt.Fprintf(w, "%s: %s of %s, %s -> %s, %s\n", x.ID, x.Type, x.ProtectionGroup, x.From, x.To, x.State)
	if x.State == plan.Succeeded {
		fmt.Fprintf(w, "RTO %.1fs\n", x.RTO)
	}
	if x.Error != "" {
		fmt.Fprintf(w, "error: %s\n", x.Error)
	}
	for _, g := range x.Groups {
		fmt.Fprintf(w, "%s (%s)\n", g.Name, g.State)
		for _, s := range g.Steps {
			first, rest, _ := strings.Cut(s.Error, "\n")
			fmt.Fprintf(w, "  %-14s %-36s %6.1fs  %s\n", s.State, s.ID, s.Seconds(), first)
			printLines(w, strings.Repeat(" ", 63), rest)
		}
	}
}

// printLines prints each line of text that is not empty after indent: an
// error of several lines (one per region) stays in its column.
func printLines(w io.Writer, indent, text string) {
	for line := range strings.Lines(text) {
		if line = strings.TrimRight(line, "\n"); strings.TrimSpace(line) != "" {
			fmt.Fprintf(w, "%s%s\n", indent, line)
		}
	}
}
