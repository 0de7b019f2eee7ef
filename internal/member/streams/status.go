package streams

import (
	"context"
	"fmt"
	"time"

	"tandem/internal/member"
	"tandem/internal/stream"
)

// Status is a stream in `tandem status`.
type Status struct {
	Stream string `json:"stream"`
	Health string `json:"health"`
	// Processing is the region that delivers events (the lease's holder).
	Processing string                  `json:"processing_region"`
	Regions    map[string]RegionStatus `json:"regions"`
	// Lag is the number of events in the processing region's log after
	// its position.
	Lag  int64         `json:"lag"`
	Sink *stream.Stats `json:"sink,omitempty"`
	// Error says what could not be read.
	Error string `json:"error,omitempty"`
}

// RegionStatus is the stream in one region.
type RegionStatus struct {
	// Produced is the position of the region's last event.
	Produced int64 `json:"produced"`
	// Position is where the region's processing is (or would resume).
	Position int64 `json:"position"`
	// Missing counts the events the other region holds and this one lacks.
	Missing int `json:"missing"`
	// Replicated counts the events the catch-up copied into it.
	Replicated int64  `json:"replicated"`
	Error      string `json:"error,omitempty"`
}

// Status reads the brokers, the sink and the catch-up record; each part
// that does not answer is named.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := Find(env.Cfg, name)
	rep := member.Report{Kind: refKey, Member: name}
	out := Status{Stream: name, Health: "ok", Regions: map[string]RegionStatus{}}
	bad := func(health, format string, args ...any) {
		if out.Health == "ok" {
			out.Health = health
		}
		rep.Lines = append(rep.Lines, fmt.Sprintf(format, args...))
	}
	if pg := env.ProtectionGroupOf(refKey, name); pg != nil {
		if h, _, err := holder(ctx, env, pg); err == nil {
			out.Processing = h
		}
	}
	ms, _, err := loadMirror(ctx, env, s)
	if err != nil {
		bad("unreachable", "its catch-up record cannot be read: %v", err)
	}
	sk, err := OpenSink(ctx, s, time.Second)
	if err == nil {
		var st stream.Stats
		if st, err = sk.Stats(ctx); err == nil {
			out.Sink = &st
		}
		sk.Close()
	}
	if err != nil {
		out.Error = err.Error()
		bad("unreachable", "its sink cannot be read: %v", err)
	}
	regions := s.regionNames()
	for i, r := range regions {
		rs := RegionStatus{Missing: ms.Missing(regions[1-i])}
		if ms != nil {
			rs.Replicated = ms.Copied[r]
		}
		if out.Sink != nil {
			rs.Position = out.Sink.Positions[s.Consumer(r)]
		}
		l, err := openLog(ctx, s, r)
		if err == nil {
			rs.Produced, err = l.Head(ctx)
			l.Close()
		}
		if err != nil {
			rs.Error = err.Error()
			bad("broker-down", "%v", err)
		}
		out.Regions[r] = rs
	}
	if p, ok := out.Regions[out.Processing]; ok && p.Error == "" {
		out.Lag = max(p.Produced-p.Position, 0)
		if out.Lag > s.MaxLag {
			bad("lagging", "%s is %d events behind its log (max_lag %d): is its serve running?", out.Processing, out.Lag, s.MaxLag)
		}
	}
	for _, r := range regions {
		if m := out.Regions[r].Missing; int64(m) > s.MaxLag {
			bad("lagging", "%s lacks %d events of the other region (max_lag %d): the catch-up runs under the lease holder's serve", r, m, s.MaxLag)
		}
	}
	first := fmt.Sprintf("processed in %s, %d events behind", out.Processing, out.Lag)
	if out.Sink != nil {
		first += fmt.Sprintf("; sink: %d applied, %d duplicates absorbed, epoch %d", out.Sink.Applied, out.Sink.Duplicates, out.Sink.Epoch)
	}
	rep.Lines = append([]string{first}, rep.Lines...)
	for _, r := range regions {
		rs := out.Regions[r]
		rep.Lines = append(rep.Lines, fmt.Sprintf("  %s: %d produced, position %d, lacks %d, %d caught up", r, rs.Produced, rs.Position, rs.Missing, rs.Replicated))
	}
	rep.Health, rep.Attention, rep.Detail = out.Health, out.Health != "ok", out
	return rep
}

// Backlog is what the standby region (the one that does not process)
// lacks of the processing region's events, against max_lag.
func (Kind) Backlog(ctx context.Context, env *member.Env, name string) (float64, float64, string, bool) {
	bound := float64(Find(env.Cfg, name).MaxLag)
	st, ok := Kind{}.Status(ctx, env, name).Detail.(Status)
	if !ok || st.Processing == "" {
		return 0, bound, "events", false
	}
	for r, rs := range st.Regions {
		if r != st.Processing {
			return float64(rs.Missing), bound, "events", rs.Error == "" && st.Error == ""
		}
	}
	return 0, bound, "events", false
}
