package stream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"tandem/internal/redact"
)

// HTTPCall is an HTTP sink: each event is one request whose body is the
// event's data, with headers the receiver deduplicates and fences by:
//
//	Idempotency-Key   the event's id (the same whichever region sends it)
//	Tandem-Epoch      the lease epoch of the delivering region
//	Tandem-Region     the delivering region
//	Tandem-Position   the event's position in that region's stream
//
// A 2xx answer applies the event. tandem keeps the ids, positions and the
// epoch fence in a ledger database (OpenHTTP), so an event it saw applied
// is not sent again; an event whose answer was lost (a crash, a timeout)
// is sent again with the same key, and only a receiver that honours the
// key applies it once.
type HTTPCall struct {
	URL     string
	Method  string // default POST
	Headers map[string]string
	Timeout time.Duration // one request (default 10s)
	Client  *http.Client
}

func (h *HTTPCall) do(ctx context.Context, ev Event, d Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, h.Method, h.URL, bytes.NewReader(ev.Data))
	if err != nil {
		return fmt.Errorf("%s: %w", redact.URL(h.URL), redact.Err(err))
	}
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Idempotency-Key", ev.ID)
	req.Header.Set("Tandem-Epoch", strconv.FormatInt(d.Epoch, 10))
	req.Header.Set("Tandem-Region", d.Region)
	req.Header.Set("Tandem-Position", strconv.FormatInt(ev.Pos, 10))
	resp, err := h.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", redact.URL(h.URL), redact.Err(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s answered %s: %s", h.Method, redact.URL(h.URL), resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// OpenHTTP opens an HTTP sink of stream with its ledger in a database
// (driver sqlite or postgres).
func OpenHTTP(ctx context.Context, driver, dsn, stream string, call HTTPCall) (*Sink, error) {
	s, err := OpenSQL(ctx, driver, dsn, stream, nil)
	if err != nil {
		return nil, err
	}
	if call.Method == "" {
		call.Method = http.MethodPost
	}
	if call.Timeout <= 0 {
		call.Timeout = 10 * time.Second
	}
	if call.Client == nil {
		call.Client = &http.Client{}
	}
	s.call = &call
	return s, nil
}
