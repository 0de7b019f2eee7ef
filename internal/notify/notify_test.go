package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var event = Event{Kind: "group.sync", Status: "failed", Group: "sales", Owner: "data@example.com",
	Summary: "group sales: sync failed; the standby still holds run r1", Error: "table silver: source unreachable",
	Time: time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC), Versions: map[string]int64{"bronze": 3}}

func TestWebhook(t *testing.T) {
	var got Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", 400)
			return
		}
		json.NewDecoder(r.Body).Decode(&got)
	}))
	defer srv.Close()
	if err := (&Webhook{URL: srv.URL + "/hooks/T0KEN"}).Notify(context.Background(), event); err != nil {
		t.Fatal(err)
	}
	if got.Group != "sales" || got.Status != "failed" || got.Error == "" || got.Versions["bronze"] != 3 {
		t.Fatalf("received %+v", got)
	}
	// Failures name the host, never the secret path.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer bad.Close()
	err := (&Webhook{URL: bad.URL + "/hooks/T0KEN"}).Notify(context.Background(), event)
	if err == nil || strings.Contains(err.Error(), "T0KEN") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("error %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	err = (&Webhook{URL: "http://" + addr + "/hooks/T0KEN"}).Notify(context.Background(), event)
	if err == nil || strings.Contains(err.Error(), "T0KEN") {
		t.Fatalf("unreachable: %v", err)
	}
}

// A real SMTP server on loopback.
type backend struct {
	mu   sync.Mutex
	msgs []message
}

type message struct {
	from, user string
	to         []string
	data       string
}

type session struct {
	b   *backend
	msg message
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != "tandem" || pass != "s3cret" {
			return errors.New("invalid credentials")
		}
		s.msg.user = user
		return nil
	}), nil
}
func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.msg.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.to = append(s.msg.to, to)
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.msg.data = string(b)
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, s.msg)
	s.b.mu.Unlock()
	return nil
}
func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }

func TestEmail(t *testing.T) {
	be := &backend{}
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	m := &Email{Addr: l.Addr().String(), From: "tandem@example.com", To: []string{"data@example.com"}, Username: "tandem", Password: "s3cret"}
	if err := m.Notify(context.Background(), event); err != nil {
		t.Fatal(err)
	}
	be.mu.Lock()
	got := be.msgs
	be.mu.Unlock()
	if len(got) != 1 || got[0].from != "tandem@example.com" || got[0].to[0] != "data@example.com" || got[0].user != "tandem" ||
		!strings.Contains(got[0].data, "Subject: [tandem] group.sync failed: sales") || !strings.Contains(got[0].data, "source unreachable") {
		t.Fatalf("received %+v", got)
	}
	m.Password = "wrong"
	if err := m.Notify(context.Background(), event); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("bad password: %v", err)
	}
}
