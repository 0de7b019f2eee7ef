package alert

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"tandem/internal/config"
	"tandem/internal/notify"
	"tandem/internal/plan"
)

// receiver is an HTTP endpoint that keeps the events posted to it.
type receiver struct {
	mu     sync.Mutex
	events []notify.Event
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var e notify.Event
	json.NewDecoder(req.Body).Decode(&e)
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *receiver) took() []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Event(nil), r.events...)
}

// mailbox is an SMTP server that keeps the messages it receives.
type mailbox struct {
	mu   sync.Mutex
	msgs []string
}

func (m *mailbox) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{m: m}, nil }

type mailSession struct{ m *mailbox }

func (s *mailSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mailSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *mailSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, string(b))
	s.m.mu.Unlock()
	return nil
}
func (s *mailSession) Reset()        {}
func (s *mailSession) Logout() error { return nil }

func (m *mailbox) took() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.msgs...)
}

// A condition is told once while it lasts and once when it ends, to a
// webhook and by mail; events are told each time; plan runs are told as
// they start, wait, and end with their RTO.
func TestAlerts(t *testing.T) {
	rcv := &receiver{}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	box := &mailbox{}
	srv := smtp.NewServer(box)
	srv.Domain = "localhost"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	pg := &config.ProtectionGroup{Name: "lakehouse", Notify: &config.Notify{Webhook: config.Secret(hook.URL + "/hooks/T0KEN"),
		Email: &config.EmailNotify{SMTP: l.Addr().String(), From: "tandem@example.com", To: []string{"oncall@example.com"}}}}
	a := New(pg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for range 3 {
		a.Raise(ctx, "region/east", "region.down", "west sees east down", nil)
	}
	a.Resolve(ctx, "region/east", "west sees east up again")
	a.Resolve(ctx, "region/east", "west sees east up again") // nothing open: nothing told
	a.Raise(ctx, "region/east", "region.down", "west sees east down", nil)

	tell := a.Plan(ctx)
	x := &plan.Execution{ID: "failover-1", Type: plan.Failover, From: "east", To: "west", State: plan.Running,
		Groups: []plan.GroupRecord{{Name: "approval", Steps: []*plan.StepRecord{{ID: "user:ok/go", State: plan.Waiting}}}}}
	tell(x)
	tell(x)
	x.State, x.RTO = plan.Succeeded, 12.5
	x.Groups[0].Steps[0].State = plan.Succeeded
	tell(x)
	tell(x)
	ended := time.Now()
	failed := &plan.Execution{ID: "switchover-2", Type: plan.Switchover, From: "west", To: "east", State: plan.Failed, Ended: &ended, Error: "step drain failed"}
	tell(failed)
	tell(failed)

	var got []string
	for _, e := range rcv.took() {
		got = append(got, e.Kind+" "+e.Status)
		if e.Group != "lakehouse" || e.Time.IsZero() {
			t.Fatalf("event without its group or time: %+v", e)
		}
		if e.Status == "succeeded" && e.Details["rto_seconds"] != 12.5 {
			t.Fatalf("finished run without its RTO: %+v", e)
		}
	}
	want := []string{"region.down firing", "region.down resolved", "region.down firing", "plan.failover started", "plan.failover waiting", "plan.failover succeeded",
		"plan.switchover started", "plan.switchover failed"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("webhook received %v\nwant %v", got, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(box.took()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mails := box.took()
	if len(mails) != len(want) || !strings.Contains(mails[1], "Subject: [tandem] region.down resolved: lakehouse") {
		t.Fatalf("%d mails: %q", len(mails), mails)
	}
	// Without a notify setting, alerts cost nothing and do nothing.
	var none *Alerts = New(&config.ProtectionGroup{Name: "x"}, nil)
	none.Raise(ctx, "k", "k", "s", nil)
	none.Plan(ctx)(x)
}
