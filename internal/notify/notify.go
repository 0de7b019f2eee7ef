// Package notify tells people what tandem did: a webhook (a JSON POST) and
// email over SMTP. Errors name the endpoint by host only: webhook paths and
// SMTP passwords are secrets.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/smtp"
	"strings"
	"time"

	"tandem/internal/config"

	"tandem/internal/redact"
)

// Event is one thing worth telling.
type Event struct {
	Kind     string           `json:"kind"`   // e.g. group.sync
	Status   string           `json:"status"` // succeeded, failed
	Group    string           `json:"group,omitempty"`
	Owner    string           `json:"owner,omitempty"`
	RunID    string           `json:"run_id,omitempty"`
	Summary  string           `json:"summary"`
	Error    string           `json:"error,omitempty"`
	Time     time.Time        `json:"time"`
	Details  map[string]any   `json:"details,omitempty"`
	Versions map[string]int64 `json:"versions,omitempty"`
}

// Notifier delivers events.
type Notifier interface {
	Notify(ctx context.Context, e Event) error
}

// Webhook POSTs each event as JSON.
type Webhook struct {
	URL    string
	Client *http.Client
}

func (w *Webhook) Notify(ctx context.Context, e Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", Host(w.URL), redact.Err(err))
	}
	req.Header.Set("Content-Type", "application/json")
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", Host(w.URL), redact.Err(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s answered %s", Host(w.URL), resp.Status)
	}
	return nil
}

// Host is a URL's scheme and host: how endpoints whose paths may carry
// secrets are named in messages.
func Host(raw string) string { return redact.Host(raw) }

// Email sends each event as a plain-text message. With Username set it
// authenticates (PLAIN), which Go allows only over TLS or to localhost;
// STARTTLS is used whenever the server offers it.
type Email struct {
	Addr     string // host:port
	From     string
	To       []string
	Username string
	Password string
}

func (m *Email) Notify(ctx context.Context, e Event) error {
	host, _, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return fmt.Errorf("smtp %q: %w", m.Addr, err)
	}
	var auth smtp.Auth
	if m.Username != "" {
		auth = smtp.PlainAuth("", m.Username, m.Password, host)
	}
	subject := fmt.Sprintf("[tandem] %s %s: %s", e.Kind, e.Status, e.Group)
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		m.From, strings.Join(m.To, ", "), subject, e.Time.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "%s\r\n", e.Summary)
	if e.Error != "" {
		fmt.Fprintf(&b, "\r\nError: %s\r\n", e.Error)
	}
	if len(e.Versions) > 0 {
		fmt.Fprintf(&b, "\r\nVersions:\r\n")
		for t, v := range e.Versions {
			fmt.Fprintf(&b, "  %s: %d\r\n", t, v)
		}
	}
	done := make(chan error, 1)
	go func() { done <- smtp.SendMail(m.Addr, auth, m.From, m.To, []byte(b.String())) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("smtp %s: %w", m.Addr, err)
	}
	return nil
}

// All delivers to every notifier and joins their errors.
type All []Notifier

func (a All) Notify(ctx context.Context, e Event) error {
	var errs []error
	for _, n := range a {
		if err := n.Notify(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FromConfig builds the notifiers a notify setting names, and the outcomes
// worth telling (success, failure). A nil setting tells nothing.
func FromConfig(n *config.Notify) (Notifier, map[string]bool) {
	if n == nil {
		return nil, nil
	}
	var all All
	if n.Webhook != "" {
		all = append(all, &Webhook{URL: string(n.Webhook)})
	}
	if e := n.Email; e != nil {
		all = append(all, &Email{Addr: e.SMTP, From: e.From, To: e.To, Username: e.Username, Password: string(e.Password)})
	}
	on := map[string]bool{}
	for _, o := range n.On {
		on[o] = true
	}
	return all, on
}
