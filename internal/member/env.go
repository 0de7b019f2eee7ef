package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"tandem/internal/config"
	"tandem/internal/fence"
	"tandem/internal/lease"
	"tandem/internal/location"
	"tandem/internal/objstore"
	"tandem/internal/state"
)

// Env is what every kind works with: the configuration, a logger, and the
// state locations of the regions and the witness, each opened once.
type Env struct {
	Cfg *config.Config
	Log *slog.Logger
	// ReadOnly makes the Env create nothing: a folder a write would create
	// (a region's state, a replica) opens as an empty bucket that takes no
	// writes. Dry runs use it.
	ReadOnly bool

	mu     sync.Mutex
	stores map[string]state.Store // region name, or "" for the witness
	noted  sync.Map               // regions whose finding the witness is recorded
	seenMu sync.Mutex             // one update of a witness-seen record at a time
}

// NewEnv returns an Env over cfg; a nil log discards.
func NewEnv(cfg *config.Config, log *slog.Logger) *Env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Env{Cfg: cfg, Log: log, stores: map[string]state.Store{}}
}

// Config is the configuration (health.Env).
func (e *Env) Config() *config.Config { return e.Cfg }

// RegionState opens a region's state location, creating a missing folder,
// except under a reader's context (Reading), where a missing folder reads
// as empty and is not made.
func (e *Env) RegionState(ctx context.Context, region string) (state.Store, error) {
	reg := e.Cfg.Region(region)
	if reg == nil {
		return state.Store{}, fmt.Errorf("unknown region %q", region)
	}
	st, err := e.store(ctx, region, func() (state.Store, error) {
		b, err := e.openURL(ctx, reg.State, reg.S3, !reading(ctx))
		if err != nil {
			return state.Store{}, fmt.Errorf("region %s state: %w", reg.Name, err)
		}
		return state.Store{Bucket: b}, nil
	})
	if err != nil && reading(ctx) && errors.Is(err, objstore.ErrNotExist) {
		return state.Store{Bucket: objstore.Empty(reg.State)}, nil // not kept: a writer makes the folder
	}
	return st, err
}

type readingKey struct{}

// Reading marks ctx as a reader's (status, lags, alerts): under it no
// region's state folder is made. A reader looks at both regions, and a
// region's folder that is gone (its disk unmounted, its region down) must
// not come back empty.
func Reading(ctx context.Context) context.Context {
	return context.WithValue(ctx, readingKey{}, true)
}

func reading(ctx context.Context) bool { return ctx.Value(readingKey{}) != nil }

// Witness opens the witness location. A witness folder that does not
// exist is an error, not an empty witness: a lease record that cannot be
// read is never taken for one never written (WitnessFor makes it).
func (e *Env) Witness(ctx context.Context) (state.Store, error) {
	return e.witness(ctx, false)
}

// witnessSeenKey names the record, in a region's own state, of what the
// region found in the witness (witnessSeen).
const witnessSeenKey = "witness-seen.json"

// witnessSeen is what a region found in the witness at URL: that it was
// there, and per protection group the newest lease holder and epoch its
// serve saw. A witness folder or lease record missing after that was lost,
// not never made.
type witnessSeen struct {
	URL    string               `json:"url"`
	Seen   time.Time            `json:"seen"`
	Leases map[string]leaseSeen `json:"leases,omitempty"`
}

type leaseSeen struct {
	Holder string `json:"holder"`
	Epoch  int64  `json:"epoch"`
}

// WitnessFor opens the witness for region's lease of pg. A missing witness
// folder is made only on a first start: where region never found one at
// that location, and only for the configured primary (the one region that
// takes a lease never taken) or, with explicit, for a tandem lease acquire.
// A witness folder that region found before and that is gone now was
// unmounted or removed: made again it would be empty, an empty witness
// reads as a lease never taken, and the configured primary would take it
// again under epoch 1 while the real witness names another holder.
func (e *Env) WitnessFor(ctx context.Context, pg *config.ProtectionGroup, region string, explicit bool) (state.Store, error) {
	w, err := e.Witness(ctx)
	if errors.Is(err, objstore.ErrNotExist) {
		when, seen := e.sawWitness(ctx, region)
		switch {
		case seen:
			return state.Store{}, fmt.Errorf("the witness %s, which holds the region leases, is gone: region %s found it there on %s, so it was unmounted or removed since. tandem does not make it again, empty (an empty witness reads as a lease never taken): mount it again; if it is lost for good, make the folder yourself and take the lease with: tandem lease acquire --config %s %s --region %s: %w",
				e.Cfg.Witness.URL, region, when.UTC().Format(time.DateTime), e.Cfg.Path(), pg.Name, region, objstore.ErrNotExist)
		case explicit || region == pg.Primary:
			w, err = e.witness(ctx, true)
		}
	}
	if err == nil {
		e.noteWitness(ctx, region)
	}
	return w, err
}

// sawWitness reports whether region's state records that it found the
// configured witness, and when.
func (e *Env) sawWitness(ctx context.Context, region string) (time.Time, bool) {
	rec, ok := e.seen(ctx, region)
	return rec.Seen, ok
}

// seen reads region's record of the configured witness (ok false: none, or
// one of another witness location). Reading it makes no folder.
func (e *Env) seen(ctx context.Context, region string) (witnessSeen, bool) {
	var rec witnessSeen
	st, err := e.RegionState(Reading(ctx), region)
	if err != nil {
		return rec, false
	}
	if _, err := st.Load(ctx, witnessSeenKey, &rec); err != nil || rec.URL != e.Cfg.Witness.URL {
		return witnessSeen{}, false
	}
	return rec, true
}

// updateSeen applies change to region's record of the witness and saves it
// when it is new or change reports a change.
func (e *Env) updateSeen(ctx context.Context, region string, change func(*witnessSeen) bool) error {
	if e.ReadOnly {
		return nil
	}
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	rec, ok := e.seen(ctx, region)
	if !ok {
		rec = witnessSeen{URL: e.Cfg.Witness.URL, Seen: time.Now()}
	}
	if !change(&rec) && ok {
		return nil
	}
	st, err := e.RegionState(ctx, region)
	if err == nil {
		_, err = st.Save(ctx, witnessSeenKey, rec, objstore.PutOptions{})
	}
	return err
}

// noteWitness records, once per region and process, that region found the
// witness (see WitnessFor).
func (e *Env) noteWitness(ctx context.Context, region string) {
	if _, done := e.noted.LoadOrStore(region, true); done {
		return
	}
	if err := e.updateSeen(ctx, region, func(*witnessSeen) bool { return false }); err != nil {
		e.noted.Delete(region) // tried again next time
		e.Log.Warn("record that the region found the witness", "region", region, "err", err)
	}
}

// NoteLease records in region's state that it saw rec hold pg's lease, so
// that a record missing later is never taken for a lease never taken
// (lease.Lease.Known).
func (e *Env) NoteLease(ctx context.Context, region, pg string, rec lease.Record) {
	err := e.updateSeen(ctx, region, func(w *witnessSeen) bool {
		if rec.Epoch <= w.Leases[pg].Epoch {
			return false
		}
		if w.Leases == nil {
			w.Leases = map[string]leaseSeen{}
		}
		w.Leases[pg] = leaseSeen{Holder: rec.Holder, Epoch: rec.Epoch}
		return true
	})
	if err != nil {
		e.Log.Warn("record the lease the region saw", "group", pg, "region", region, "err", err)
	}
}

// KnownLease is the newest holder and epoch of pg's lease that region's
// state records.
func (e *Env) KnownLease(ctx context.Context, region, pg string) lease.Record {
	rec, _ := e.seen(ctx, region)
	k := rec.Leases[pg]
	return lease.Record{Holder: k.Holder, Epoch: k.Epoch}
}

func (e *Env) witness(ctx context.Context, create bool) (state.Store, error) {
	return e.store(ctx, "", func() (state.Store, error) {
		if e.Cfg.Witness == nil {
			return state.Store{}, fmt.Errorf("no witness is configured")
		}
		b, err := e.openURL(ctx, e.Cfg.Witness.URL, e.Cfg.Witness.S3, create)
		if err != nil {
			return state.Store{}, fmt.Errorf("the witness, which holds the region leases, cannot be opened (on a first start, tandem lease acquire or the primary's serve makes a missing witness folder; one that was there was unmounted or removed): %w", err)
		}
		return state.Store{Bucket: b}, nil
	})
}

func (e *Env) store(ctx context.Context, key string, open func() (state.Store, error)) (state.Store, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st, ok := e.stores[key]; ok {
		return st, nil
	}
	st, err := open()
	if err != nil {
		return state.Store{}, err
	}
	e.stores[key] = st
	return st, nil
}

func (e *Env) openURL(ctx context.Context, url string, s3 config.S3, create bool) (objstore.Bucket, error) {
	l, err := location.Parse(url)
	if err != nil {
		return nil, err
	}
	b, err := location.Open(ctx, l, s3.Options(), create && !e.ReadOnly)
	if err != nil && create && e.ReadOnly && l.Scheme == "file" && errors.Is(err, objstore.ErrNotExist) {
		return objstore.Empty(l.String()), nil
	}
	return b, err
}

// Leases is the witness folder of the region leases.
func (e *Env) Leases(ctx context.Context) (state.Store, error) {
	w, err := e.Witness(ctx)
	return w.Sub("leases"), err
}

// Lease reads a protection group's lease; ok is false when it was never
// taken.
func (e *Env) Lease(ctx context.Context, pg string) (lease.Record, bool, error) {
	st, err := e.Leases(ctx)
	if err != nil {
		return lease.Record{}, false, err
	}
	return lease.Show(ctx, st, pg)
}

// Open opens a location in a region: a member's bucket or table. With
// create, a missing folder is created.
func (e *Env) Open(ctx context.Context, region, url string, create bool) (objstore.Bucket, error) {
	reg := e.Cfg.Region(region)
	if reg == nil {
		return nil, fmt.Errorf("unknown region %q", region)
	}
	return e.openURL(ctx, url, reg.S3, create)
}

// ProtectionGroupOf returns the protection group that lists member under
// kind (a protection group key: replications, groups, ...), or nil.
func (e *Env) ProtectionGroupOf(kind, member string) *config.ProtectionGroup {
	for i := range e.Cfg.ProtectionGroups {
		if slices.Contains(e.Cfg.ProtectionGroups[i].Members(kind), member) {
			return &e.Cfg.ProtectionGroups[i]
		}
	}
	return nil
}

// Reversed reports whether a member configured from→to copies to→from
// now: the lease names to as the holder and from as its standby.
func (e *Env) Reversed(ctx context.Context, kind, member, from, to string) (bool, error) {
	pg := e.ProtectionGroupOf(kind, member)
	if pg == nil || e.Cfg.Witness == nil {
		return false, nil
	}
	rec, ok, err := e.Lease(ctx, pg.Name)
	if err != nil {
		return false, err
	}
	return ok && rec.Holder == to && rec.Standby == from, nil
}

// Grace is the longest grant a writer of a member holds: the grace of its
// protection group's lease, or fence.DefaultGrace outside any.
func (e *Env) Grace(kind, member string) time.Duration {
	if pg := e.ProtectionGroupOf(kind, member); pg != nil {
		return min(lease.Grace(time.Duration(pg.LeaseTTL)), fence.DefaultGrace)
	}
	return fence.DefaultGrace
}

// Slack is how long a write may land after its grant ended in pg's
// stores: fence.StoreSlack when any of them (a region's state, a member's
// location) is on S3, 0 for folders only.
func (e *Env) Slack(pg *config.ProtectionGroup) time.Duration {
	urls := []string{}
	for _, region := range []string{pg.Primary, pg.Standby} {
		if r := e.Cfg.Region(region); r != nil {
			urls = append(urls, r.State)
		}
		for _, l := range e.Cfg.Locations(pg, region) {
			urls = append(urls, l.URL)
		}
	}
	for _, u := range urls {
		if l, err := location.Parse(u); err == nil && l.Scheme == "s3" {
			return fence.StoreSlack
		}
	}
	return 0
}

// Conditions are the fencing conditions of a member copying from source
// to target: the lease of its protection group held by source with target
// as the standby (or never taken, when source is the configured primary),
// and no drill in progress in target. A member of no protection group has
// none.
func (e *Env) Conditions(kind, member, source, target string) []fence.Condition {
	pg := e.ProtectionGroupOf(kind, member)
	if pg == nil {
		return nil
	}
	return []fence.Condition{
		e.leaseCondition(pg, lease.Want{Holder: source, Standby: target, Unleased: source == pg.Primary}),
		e.notDrilling(pg, target),
	}
}

// ActingFor is the fencing condition of a plan step acting for region:
// region holds pg's lease (before any lease: region is the configured
// primary).
func (e *Env) ActingFor(pg *config.ProtectionGroup, region string) []fence.Condition {
	return []fence.Condition{e.leaseCondition(pg, lease.Want{Holder: region, Unleased: region == pg.Primary})}
}

func (e *Env) leaseCondition(pg *config.ProtectionGroup, w lease.Want) fence.Condition {
	w.Group, w.TTL = pg.Name, time.Duration(pg.LeaseTTL)
	return func(ctx context.Context) (fence.Grant, error) {
		st, err := e.Leases(ctx)
		if err != nil {
			return fence.Grant{}, err
		}
		return w.Condition(st)(ctx)
	}
}

// notDrilling is the condition that no drill of pg is in progress in
// region: nothing is copied into a standby under test.
func (e *Env) notDrilling(pg *config.ProtectionGroup, region string) fence.Condition {
	return func(ctx context.Context) (fence.Grant, error) {
		if err := e.Drilling(ctx, pg, region); err != nil {
			return fence.Grant{}, err
		}
		return fence.Grant{For: fence.DefaultGrace, What: "drills in " + region}, nil
	}
}

// Hint is what a plan command tandem prints for pg needs to run as pasted:
// --config, and --protection-group when the file has more than one.
func (e *Env) Hint(pg *config.ProtectionGroup) string {
	h := "--config " + e.Cfg.Path()
	if len(e.Cfg.ProtectionGroups) > 1 {
		h += " --protection-group " + pg.Name
	}
	return h
}

// Drill is the record of a drill in progress in the standby.
type Drill struct {
	Execution string    `json:"execution"`
	Started   time.Time `json:"started"`
}

// Drills is region's folder of drill records.
func (e *Env) Drills(ctx context.Context, region string) (state.Store, error) {
	rs, err := e.RegionState(ctx, region)
	return rs.Sub("drills"), err
}

// Drilling fails, wrapping fence.ErrFenced, while a drill of pg is in
// progress in region.
func (e *Env) Drilling(ctx context.Context, pg *config.ProtectionGroup, region string) error {
	drills, err := e.Drills(ctx, region)
	if err != nil {
		return err
	}
	var d Drill
	_, err = drills.Load(ctx, pg.Name+".json", &d)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: a drill of %s is in progress in %s since %s (execution %s); `tandem plan run %s drill-stop` ends it",
		fence.ErrFenced, pg.Name, region, d.Started.Format(time.RFC3339), d.Execution, e.Hint(pg))
}
