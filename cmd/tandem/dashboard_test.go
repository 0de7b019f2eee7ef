package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tandem/internal/chromium"
)

// browser starts Debian's chromium, headless, and returns a context for
// one tab; more tabs come from chromedp.NewContext of it.
func browser(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel, err := chromium.Start(context.Background(), chromedp.WindowSize(1280, 1100))
	if err != nil {
		t.Fatalf("%v (bash scripts/test.sh installs Debian's chromium)", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// page is one browser tab on a serve's dashboard.
type page struct {
	t   *testing.T
	ctx context.Context
}

func openPage(t *testing.T, ctx context.Context, url string) *page {
	t.Helper()
	tab, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	// The tab opens at its first call, which must not have a deadline:
	// the tab lives as long as that call's context.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	p := &page{t, tab}
	p.do(chromedp.Navigate(url))
	return p
}

// run runs a, within a minute; a failure shows what the page shows.
func run[T any](p *page, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		body, berr := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		p.t.Fatalf("%v\nthe page shows (%v):\n%s", err, berr, body)
	}
	return v
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	run(p, chromedp.Steps(steps...))
}

// text is what a person reads in the first element sel matches.
func (p *page) text(sel string) string {
	p.t.Helper()
	return run(p, chromedp.Text(chromedp.CSS(sel)))
}

// see waits until the first element sel matches shows want.
func (p *page) see(sel, want string) {
	p.t.Helper()
	js := `(() => { const e = document.querySelector(` + quoteJS(sel) + `); return !!e && e.innerText.includes(` + quoteJS(want) + `); })()`
	run(p, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond)))
}

// notSee waits until the first element sel matches no longer shows text.
func (p *page) notSee(sel, text string) {
	p.t.Helper()
	js := `(() => { const e = document.querySelector(` + quoteJS(sel) + `); return !!e && !e.innerText.includes(` + quoteJS(text) + `); })()`
	run(p, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond)))
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do(chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

func (p *page) setToken(token string) {
	p.t.Helper()
	p.do(chromedp.SetValue(chromedp.CSS("#token"), token))
}

func quoteJS(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}

// TestDashboard drives serve's page in a real Chromium through an outage:
// both regions' serves run, a tab on each; the primary's serve is killed
// (its tab says serve does not answer and keeps what it showed); the
// standby's tab shows the lease expire, runs the prechecks, is refused a
// failover with a wrong token (nothing starts), starts one with the right
// token, is refused a second press while it waits, approves its pause,
// and shows the lease move, the RTO and the members' RPO; the run's report
// names the approval given on the page; the witness going away is said.
// TANDEM_SCREENSHOT=FILE writes the screenshot the README shows.
func TestDashboard(t *testing.T) {
	t.Parallel()
	dir, cfg := eastWest(t, `
serve: {token: right-token, rpo_every: 1s}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    lease_ttl: 2s
    rto: 10m
    replications: [lake]
    user_groups:
      - name: gate
        after: aliases
        steps:
          - {name: go-ahead, pause: true}
`)
	expecter(t)(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	east, west := startServe(t, cfg, "east"), startServe(t, cfg, "west")
	ctx := browser(t)
	pw := openPage(t, ctx, west.url(t)+"/#/lakehouse")
	pe := openPage(t, ctx, east.url(t)+"/")

	for _, p := range []*page{pw, pe} {
		p.see("#holder", "east")
		p.see("#witness", "witness: answers")
		p.see("#members", "replication lake")
	}
	pw.see("#members", "15m0s") // the replication's RPO target
	pw.see("#last-drill", "no drill has succeeded yet")
	pw.see("#executions", "no plan has run yet")

	// The primary's region goes dark: its tab says so, and keeps what it
	// last read; the standby's tab sees the lease expire.
	east.kill()
	pe.see("#conn", "serve does not answer")
	pe.see("#conn", "showing what it said last, trying again")
	pe.see("#holder", "east")
	pw.see("#lease", "expired")

	// Prechecks of a failover, from the page.
	pw.do(chromedp.SetValue(chromedp.CSS("#precheck-type"), "failover"))
	run(pw, chromedp.Evaluate[bool](`document.querySelector("#precheck-type").dispatchEvent(new Event("change"))`))
	pw.click("#run-prechecks")
	pw.see("#precheck-result", "prechecks of failover")
	pw.see("#prechecks", "check.replication:lake")

	// A wrong token: refused, said, and nothing runs.
	pw.setToken("wrong-token")
	pw.click(`button[data-plan="failover"]`)
	pw.see("#confirm", "Run failover of lakehouse?")
	pw.click("#confirm-yes")
	pw.see("#banner", "refused (401)")
	time.Sleep(500 * time.Millisecond)
	pw.see("#executions", "no plan has run yet")

	// The right token: the failover starts and waits for its approval.
	pw.setToken("right-token")
	pw.click(`button[data-plan="failover"]`)
	pw.click("#confirm-yes")
	pw.see("#steps", "waiting-for-approval")
	// A second press while it waits: one run, the other told.
	pw.click(`button[data-plan="failover"]`)
	pw.click("#confirm-yes")
	pw.see("#banner", "refused (409)")
	pw.see("#banner", "not finished")

	pw.click(`button[data-act="approve"]`)
	pw.see("#confirm", "Your name, for the record")
	pw.do(chromedp.SendKeys(chromedp.CSS("#approver"), "Dana on call"))
	pw.click("#confirm-yes")
	pw.see("#execution-title", "succeeded")
	pw.see("#holder", "west")
	pw.see("#banner", "moved: west holds it now")
	pw.see("#execution-title", "failover")
	if n := strings.Count(pw.text("#executions"), "failover"); n != 1 {
		t.Fatalf("%d failovers listed, want 1:\n%s", n, pw.text("#executions"))
	}
	steps := pw.text("#steps")
	for _, want := range []string{"user:gate/go-ahead", "lease.acquire"} {
		if !strings.Contains(steps, want) {
			t.Errorf("the steps lack %q:\n%s", want, steps)
		}
	}
	pw.see("#execution-title", "failover-")
	id := strings.Fields(strings.TrimPrefix(pw.text("#execution-title"), "failover "))[0]
	id = strings.TrimSuffix(id, ":")

	// The page's report link gives the run's report, with the approval
	// given on the page.
	href := run(pw, chromedp.AttributeValue(chromedp.CSS("#execution-actions a"), "href")).Value
	report := get(t, west.url(t)+href)
	for _, want := range []string{id, "approved by Dana on call (through the HTTP API from 127.0.0.1", "measured RTO", "RTO target</th><td>10m0s: <span class=\"succeeded\">met"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report at %s lacks %q", href, want)
		}
	}

	// The same report as a PDF, printed by Chromium.
	pdf := filepath.Join(dir, "report.pdf")
	expecter(t)(0, "wrote "+pdf, "report", "--config", cfg, id, "--pdf", "--out", pdf)
	if b := mustRead(t, pdf); len(b) < 1000 || !strings.HasPrefix(string(b), "%PDF-") {
		t.Fatalf("report --pdf wrote no PDF (%d bytes: %.20q)", len(b), b)
	}
	// No browser: said, and nothing written.
	missing := filepath.Join(dir, "missing.pdf")
	if code, out := tandem(t, []string{"TANDEM_CHROMIUM=" + filepath.Join(dir, "no-chromium")}, "report", "--config", cfg, id, "--pdf", "--out", missing); code != 1 || !strings.Contains(out, "--pdf: TANDEM_CHROMIUM:") {
		t.Fatalf("report --pdf without a browser: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("report --pdf without a browser wrote a file")
	}

	// The run's lock is gone once the overview is read again.
	pw.notSee("#health", "unfinished run")
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if f := os.Getenv("TANDEM_SCREENSHOT"); f != "" {
		shot = f
	}
	png := run(pw, chromedp.FullScreenshot(100))
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("the screenshot is not a PNG (%d bytes)", len(png))
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}

	// The witness goes away: the page says so.
	if err := os.Rename(filepath.Join(dir, "witness"), filepath.Join(dir, "witness-away")); err != nil {
		t.Fatal(err)
	}
	pw.see("#witness", "does not answer")
	resp, err := http.Get(west.url(t) + "/api/v1/protection-groups/lakehouse/lease")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the lease with the witness gone: %d, want 503", resp.StatusCode)
	}
}

// TestDashboardProtectedReads: with serve.protect_reads the page shows
// nothing but how to go on until the token is typed in, then everything.
func TestDashboardProtectedReads(t *testing.T) {
	t.Parallel()
	_, cfg := eastWest(t, `
serve: {token: right-token, protect_reads: true}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake]}
`)
	srv := startServe(t, cfg, "west")
	p := openPage(t, browser(t), srv.url(t)+"/")
	p.see("#needs-token", "type serve.token in the token field")
	if body := p.text("body"); strings.Contains(body, "replication lake") || strings.Contains(body, "east") {
		t.Fatalf("the page showed data without the token:\n%s", body)
	}
	p.setToken("right-token")
	p.see("#holder", "east")
	p.see("#members", "replication lake")
}
