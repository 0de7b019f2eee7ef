package member

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/objstore"
	"tandem/internal/state"
)

// Passivity is what a region's serve did to stay passive in a protection
// group whose lease another region holds: each Passive member made
// passive (workflows paused, databases refusing writes). It is recorded
// in that region's state, passive/<protection group>.json.
type Passivity struct {
	ProtectionGroup string    `json:"protection_group"`
	Region          string    `json:"region"`
	Holder          string    `json:"holder"`
	Epoch           int64     `json:"epoch"`
	Since           time.Time `json:"since"`
	Checked         time.Time `json:"checked"`
	// Done is true once every member was made passive under Epoch.
	Done bool `json:"done"`
	// Log is what was done; Errors what could not be done yet (retried).
	Log    []string `json:"log,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

// PassiveRecords is region's folder of passivity records.
func (e *Env) PassiveRecords(ctx context.Context, region string) (state.Store, error) {
	st, err := e.RegionState(ctx, region)
	return st.Sub("passive"), err
}

// LoadPassivity reads region's record for pg (ok false: none).
func (e *Env) LoadPassivity(ctx context.Context, pg, region string) (Passivity, bool, error) {
	st, err := e.PassiveRecords(ctx, region)
	if err != nil {
		return Passivity{}, false, err
	}
	var p Passivity
	_, err = st.Load(ctx, pg+".json", &p)
	if errors.Is(err, objstore.ErrNotExist) {
		return Passivity{}, false, nil
	}
	return p, err == nil, err
}

// KeepPassive adds to s, for each protection group region belongs to, a
// task that makes region passive whenever another region holds the lease:
// before anything else an old primary that comes back does, its workflows
// are paused and its databases refuse writes. It retries what failed every
// round, and a wake (the lease changing hands, seen by the lease keeper)
// starts a round at once. It exports tandem_region_passive{group,region}.
func (s *Serving) KeepPassive(region string, wake map[string]chan struct{}) {
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "region", Name: "passive",
		Help: "1 once this region, which does not hold the protection group's lease, made every member passive (workflows paused, databases fenced)."},
		[]string{"group", "region"})
	s.Reg.MustRegister(gauge)
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		if region != pg.Primary && region != pg.Standby {
			continue
		}
		var done int64 // epoch made passive
		s.Task(daemon.Task{Name: "passive/" + pg.Name, Interval: 5 * time.Second, NotReady: true, Wake: wake[pg.Name],
			Run: func(ctx context.Context) time.Duration {
				v, err := s.passivate(ctx, pg, region, &done)
				if err != nil {
					s.Env.Log.Error("keep the region passive", "group", pg.Name, "region", region, "err", err)
				}
				gauge.WithLabelValues(pg.Name, region).Set(v)
				return 0
			}})
	}
}

// passivate does one round; it returns the gauge's value.
func (s *Serving) passivate(ctx context.Context, pg *config.ProtectionGroup, region string, done *int64) (float64, error) {
	rec, ok, err := s.Env.Lease(ctx, pg.Name)
	if err != nil {
		return 0, err
	}
	if !ok || rec.Holder == "" || rec.Holder == region {
		*done = 0
		return 0, nil
	}
	if *done == rec.Epoch {
		return 1, nil
	}
	p, _, err := s.Env.LoadPassivity(ctx, pg.Name, region)
	if err != nil {
		return 0, err
	}
	if p.Epoch != rec.Epoch {
		p = Passivity{ProtectionGroup: pg.Name, Region: region, Since: time.Now().UTC()}
	}
	p.Holder, p.Epoch, p.Checked, p.Log, p.Errors = rec.Holder, rec.Epoch, time.Now().UTC(), nil, nil
	for _, k := range Kinds() {
		pk, ok := k.(Passive)
		if !ok {
			continue
		}
		for _, m := range pg.Members(k.Name()) {
			var out bytes.Buffer
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := pk.Passivate(cctx, s.Env, pg, m, region, &out)
			cancel()
			if line := strings.TrimSpace(out.String()); line != "" {
				p.Log = append(p.Log, strings.Split(line, "\n")...)
			}
			if err != nil {
				p.Errors = append(p.Errors, err.Error())
			}
		}
	}
	p.Done = len(p.Errors) == 0
	if p.Done {
		s.Env.Log.Warn("another region holds the lease: this region is passive", "group", pg.Name, "region", region, "holder", rec.Holder, "epoch", rec.Epoch, "did", strings.Join(p.Log, "; "))
	} else {
		s.Env.Log.Error("another region holds the lease, and this region is not passive yet; retrying", "group", pg.Name, "region", region, "holder", rec.Holder, "errors", strings.Join(p.Errors, "; "))
	}
	st, err := s.Env.PassiveRecords(ctx, region)
	if err != nil {
		return 0, err
	}
	if _, err := st.Save(ctx, pg.Name+".json", p, objstore.PutOptions{}); err != nil {
		return 0, fmt.Errorf("record passivity: %w", err)
	}
	if !p.Done {
		return 0, nil
	}
	*done = rec.Epoch
	return 1, nil
}
