package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// yesFlag adds --yes, which answers the question a command that takes a
// region over asks.
func yesFlag(f *pflag.FlagSet, p *bool) {
	f.BoolVarP(p, "yes", "y", false, "do not ask for confirmation")
}

// confirm asks before a command takes a region over: what will happen, and
// a typed "yes". With yes it goes on at once; without a terminal to ask
// on, it refuses (exit 2) and says to add --yes.
func confirm(w io.Writer, yes bool, what string) error {
	if yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usageError{fmt.Errorf("%s\nthis takes a region over: add --yes to confirm (there is no terminal to ask on)", what)}
	}
	fmt.Fprintf(w, "%s\nType yes to go on: ", what)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(line)) != "yes" {
		return usageError{fmt.Errorf("not confirmed: nothing was changed")}
	}
	return nil
}
