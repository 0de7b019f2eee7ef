// Package replicate keeps a target bucket equal to a source bucket. A pass
// streams three sorted sequences side by side (the source listing, the target
// listing and the index of what earlier passes copied), decides per key
// whether to copy, delete or leave it, copies in parallel, and records the
// result. Memory does not grow with the number of unchanged objects, and an
// unchanged object costs no request of its own.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/progress"
	"tandem/internal/state"
)

// ErrPromoted is returned when the target was promoted (made writable) and
// tandem no longer replicates into it.
var ErrPromoted = errors.New("target was promoted")

// Pair is one replication from a source to a target.
type Pair struct {
	Name   string
	Source objstore.Bucket
	Target objstore.Bucket
	// Delete removes target objects the source no longer has. With State,
	// only objects tandem copied are deleted; objects that never came from
	// the source are reported as foreign and kept.
	Delete bool
	// Exclude lists key prefixes that replication leaves alone on both sides.
	Exclude []string
	// Transfers is the number of objects copied at once (default 16). A
	// target that asks for more writes in flight (objstore.InFlighter: S3)
	// gets them.
	Transfers int
	// MultipartThreshold is the size from which an object goes up in parts
	// when the target supports it (default 64 MiB); PartSize is the part
	// size (default 16 MiB).
	MultipartThreshold int64
	PartSize           int64
	// Retries is the number of attempts per object within a pass (default 3).
	Retries int
	// Mode is the permission bits of every file copied into a folder;
	// zero keeps the source's less the group and other write bits (see
	// Copier.Mode).
	Mode fs.FileMode
	// IgnoreUnsupported lets a pass that passed over source entries it
	// cannot copy (symbolic links, devices, pipes, sockets; counted in the
	// summary either way) still claim its watermark.
	IgnoreUnsupported bool
	// ReadOnlyPrincipal, for an S3 target, is tandem's principal (an ARN):
	// every pass makes sure the bucket policy denies object writes under
	// the target to every other principal (objstore.Protect); promoting
	// the target removes that (package bucket).
	ReadOnlyPrincipal string
	// RetryBackoff is the first wait of the persisted retry queue between
	// passes for an object that keeps failing (default 30s), doubled per
	// failure up to an hour.
	RetryBackoff time.Duration
	// State is the pair's folder in the standby region's state location.
	// Without it a pass compares listings only and persists nothing.
	State *state.Store
	Log   *slog.Logger
	// Conditions are what a pass needs to write into the target (the region
	// lease held by the source region, no drill in the target). Each pass
	// writes through its own fence.Guard made of them and of the pair's
	// own condition (the target not promoted, when State is set): every
	// object, delete and record is gated at the moment it would become
	// visible, under the epoch the pass started with.
	Conditions []fence.Condition
	// Stats, when set, is reset at the start of a pass and updated as it
	// goes, for progress displays.
	Stats *Stats
	// DryRun makes a pass decide without writing: nothing is copied,
	// deleted or recorded, and the summary lists what it would copy and
	// delete (WouldCopy, WouldDelete).
	DryRun bool
}

// Stats are live counters of a pass: objects copied (Done), to copy
// (Total, found so far; TotalKnown once the listing ended), unchanged
// (Skipped), deleted and failed.
type Stats = progress.Counters

// Summary is the result of one pass.
type Summary struct {
	Pair          string    `json:"pair,omitempty"`
	Source        string    `json:"source"`
	Target        string    `json:"target"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	Seconds       float64   `json:"seconds"`
	Objects       int64     `json:"objects_copied"`
	Bytes         int64     `json:"bytes_copied"`
	Unchanged     int64     `json:"objects_skipped"`
	Adopted       int64     `json:"objects_adopted"`
	Deleted       int64     `json:"objects_deleted"`
	Failed        int64     `json:"objects_failed"`
	Pending       int64     `json:"objects_pending"`
	Foreign       int64     `json:"objects_foreign"`
	ForeignKeys   []string  `json:"foreign_sample,omitempty"`
	FailedObjects []Failure `json:"failed_sample,omitempty"`
	// Watermark is set when the pass copied every difference it found:
	// every change made in the source before it is in the target.
	Watermark *time.Time `json:"watermark,omitempty"`
	// DeletesPending counts objects tandem copied that the source no longer
	// has and that stay in the target because delete is off: the watermark
	// covers creations and changes only while it is not zero.
	DeletesPending int64    `json:"deletes_pending,omitempty"`
	DeletesSample  []string `json:"deletes_pending_sample,omitempty"`
	// Unsupported counts source entries that are no objects tandem copies
	// (symbolic links, devices, pipes, sockets), passed over; unless the
	// pair ignores them, the pass claims no watermark.
	Unsupported       int64                  `json:"objects_unsupported,omitempty"`
	UnsupportedSample []objstore.Unsupported `json:"unsupported_sample,omitempty"`
	// LeftoversRemoved counts what interrupted passes had left in the
	// target (staged files, unfinished uploads), removed by this one.
	LeftoversRemoved int `json:"leftovers_removed,omitempty"`
	// Epoch is the region lease epoch the pass wrote under (0 without one).
	Epoch int64  `json:"epoch,omitempty"`
	Error string `json:"error,omitempty"`
	// DryRun: the pass wrote nothing; WouldCopy and WouldDelete are every
	// key it would have copied (WouldCopyBytes in all) and deleted.
	DryRun         bool     `json:"dry_run,omitempty"`
	WouldCopy      []string `json:"would_copy,omitempty"`
	WouldCopyBytes int64    `json:"would_copy_bytes,omitempty"`
	WouldDelete    []string `json:"would_delete,omitempty"`
}

// Failure is an object that could not be copied; the retry queue keeps them
// between passes.
type Failure struct {
	Key         string    `json:"key"`
	Attempts    int       `json:"attempts"`
	Error       string    `json:"error"`
	FirstFailed time.Time `json:"first_failed"`
	NextAttempt time.Time `json:"next_attempt"`
}

const sampleSize = 20

func (p *Pair) defaults() {
	if p.Transfers <= 0 {
		p.Transfers = 16
	}
	if p.MultipartThreshold <= 0 {
		p.MultipartThreshold = DefaultMultipartThreshold
	}
	if p.PartSize <= 0 {
		p.PartSize = DefaultPartSize
	}
	if p.Retries <= 0 {
		p.Retries = DefaultRetries
	}
	if p.RetryBackoff <= 0 {
		p.RetryBackoff = 30 * time.Second
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.Stats == nil {
		p.Stats = &Stats{}
	}
}

func (p *Pair) excluded(key string) bool {
	for _, x := range p.Exclude {
		if strings.HasPrefix(key, x) {
			return true
		}
	}
	return false
}

// decision is what a pass does with one key; slots go through the ordered
// channel to the index writer, which waits for copies to finish.
type slot struct {
	e     entry
	write bool          // write e to the new index
	done  chan struct{} // nil when nothing is in flight
}

// RunOnce runs one pass. It returns the summary and an error for a failure
// of the pass as a whole; objects that failed are counted in the summary and
// kept in the retry queue, and the watermark does not advance past them.
func (p *Pair) RunOnce(ctx context.Context) (Summary, error) {
	p.defaults()
	p.Stats.Reset()
	sum := Summary{Pair: p.Name, Source: p.Source.URL(), Target: p.Target.URL(), Started: time.Now().UTC(), DryRun: p.DryRun}
	// The pass writes through its guard only.
	guard := p.guard()
	q := *p
	q.Target = guard.Bucket(p.Target)
	if p.State != nil {
		st := guard.Store(*p.State)
		q.State = &st
	}
	err := guard.Check(ctx)
	if err == nil && p.State != nil {
		if prom, perr := p.Promotion(ctx); perr != nil {
			err = perr
		} else if prom != nil {
			err = fmt.Errorf("%s: %w at %s by %s; tandem no longer replicates into it", p.Target.URL(), ErrPromoted, prom.At.Format(time.RFC3339), prom.By)
		}
	}
	stop := func() {}
	if err == nil && p.State != nil && !p.DryRun {
		stop, err = q.startStatus(ctx, sum)
	}
	if err == nil {
		err = q.run(ctx, &sum, guard)
		stop()
	}
	sum.Epoch = guard.Epoch()
	sum.Finished = time.Now().UTC()
	sum.Seconds = sum.Finished.Sub(sum.Started).Seconds()
	if err != nil {
		sum.Error = err.Error()
		sum.Watermark = nil
	}
	if p.State != nil && !p.DryRun && !errors.Is(err, ErrPromoted) && !fence.Fenced(err) {
		if serr := q.saveStatus(context.WithoutCancel(ctx), sum); serr != nil && err == nil {
			err = serr
		}
	}
	return sum, err
}

// guard is the pass's fence: the pair's conditions and, with records, the
// target not promoted.
func (p *Pair) guard() *fence.Guard {
	conds := slices.Clone(p.Conditions)
	if p.State != nil {
		conds = append(conds, NotPromoted(*p.State, p.Target.URL()))
	}
	return fence.New(fmt.Sprintf("replication %s into %s", p.Name, p.Target.URL()), conds...)
}

func (p *Pair) run(ctx context.Context, sum *Summary, guard *fence.Guard) error {
	var (
		prev     iter.Seq2[entry, error] = func(func(entry, error) bool) {}
		headETag string
		ix       index
		retryQ   = map[string]Failure{}
	)
	if !p.DryRun {
		n, err := objstore.Sweep(ctx, p.Target, sum.Started)
		if err != nil {
			return err
		}
		sum.LeftoversRemoved = n
		if p.ReadOnlyPrincipal != "" {
			if err := objstore.Protect(ctx, p.Target, p.ReadOnlyPrincipal); err != nil {
				return err
			}
		}
	}
	if p.State != nil {
		ix = index{st: p.State.Sub("index")}
		if err := ix.bind(ctx, objstore.Identity(p.Source), objstore.Identity(p.Target), !p.DryRun); err != nil {
			return err
		}
		var err error
		if prev, headETag, err = ix.open(ctx); err != nil {
			return err
		}
		if retryQ, err = p.loadRetryQueue(ctx); err != nil {
			return err
		}
	}

	p.Log.Debug("pass starts", "pair", p.Name, "source", p.Source.URL(), "target", p.Target.URL(),
		"indexed", p.State != nil, "retry_queue", len(retryQ), "delete", p.Delete, "dry_run", p.DryRun)
	skipped := func(u objstore.Unsupported) {
		if p.excluded(u.Key) {
			return
		}
		sum.Unsupported++
		if len(sum.UnsupportedSample) < sampleSize {
			sum.UnsupportedSample = append(sum.UnsupportedSample, u)
		}
		p.Log.Warn("not copied: not a regular file", "pair", p.Name, "key", u.Key, "kind", u.Kind)
	}
	src := pull(ctx, "source "+p.Source.URL(), objstore.ListReporting(ctx, p.Source, "", skipped), infoKey, p.excluded)
	defer src.stop()
	dst := pull(ctx, "target "+p.Target.URL(), p.Target.List(ctx, ""), infoKey, p.excluded)
	defer dst.stop()
	idx := pull(ctx, "replication index", prev, entryKey, p.excluded)
	defer idx.stop()

	var w *indexWriter
	if p.State != nil && !p.DryRun {
		w = ix.create()
	}
	keepMtime := objstore.KeepsModTime(p.Target)

	// Copies run in workers; slots reach the index writer in key order.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan copyJob)
	order := make(chan *slot, 4096)
	var (
		mu       sync.Mutex
		failures = map[string]Failure{}
		workers  sync.WaitGroup
		writeErr = make(chan error, 1)
		adopted  atomic.Int64 // by hash, in workers
	)
	copier := &Copier{Source: p.Source, Target: p.Target, MultipartThreshold: p.MultipartThreshold, PartSize: p.PartSize, Retries: p.Retries, Mode: p.Mode}
	for range objstore.Writers(p.Target, p.Transfers) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				if j.verify != nil && p.hashMatches(ctx, j.src, *j.verify) {
					j.slot.e = entry{Key: j.src.Key, Src: identOf(j.src), Dst: identOf(*j.verify)}
					j.slot.write = true
					adopted.Add(1)
					close(j.slot.done)
					continue
				}
				// The slot is done when the copy is published, which
				// a folder does in batches, after the worker moved on
				// (workers counts it until then).
				workers.Add(1)
				copier.CopyLater(ctx, j.src, func(info objstore.Info, err error) {
					defer workers.Done()
					switch {
					case fence.Refused(err):
						cancel(err) // the pass may not write: stop it, not the object
					case err == nil:
						j.slot.e = entry{Key: j.src.Key, Src: identOf(j.src), Dst: identOf(info)}
						j.slot.write = true
						p.Stats.Copied(info.Size)
					case ctx.Err() == nil:
						p.Stats.Failed.Add(1)
						p.Log.Warn("copy failed", "pair", p.Name, "key", j.src.Key, "err", err)
						mu.Lock()
						f := retryQ[j.src.Key]
						failures[j.src.Key] = p.nextFailure(f, j.src.Key, err)
						mu.Unlock()
					}
					close(j.slot.done)
				})
			}
		}()
	}
	go func() {
		var err error
		for s := range order {
			if s.done != nil {
				<-s.done
			}
			if s.write && w != nil && err == nil {
				err = w.add(ctx, s.e)
			}
		}
		writeErr <- err
	}()

	now := time.Now()
	var deciding error
	for deciding == nil {
		k, ok := minKey(src, dst, idx)
		if !ok {
			break
		}
		s, d, x := src.take(k), dst.take(k), idx.take(k)
		sl := &slot{}
		switch {
		case s != nil:
			switch {
			case d != nil && x != nil && x.Src.matches(*s) && x.Dst.matches(*d):
				sl.e, sl.write = *x, true
				p.Stats.Skipped.Add(1)
				sum.Unchanged++
			case d != nil && x == nil && sameContent(*s, *d, keepMtime):
				p.Log.Debug("already in the target: recorded", "pair", p.Name, "key", k)
				// Already there (an earlier tool, or a pass that crashed
				// before recording it): record without copying.
				sl.e, sl.write = entry{Key: k, Src: identOf(*s), Dst: identOf(*d)}, true
				sum.Adopted++
			default:
				if d != nil && x != nil && !x.Dst.matches(*d) {
					p.foreign(sum, k, "changed in the target")
				}
				// Until a copy succeeds the old record stays, so the
				// object is still known to come from the source.
				if x != nil {
					sl.e, sl.write = *x, true
				}
				if f, queued := retryQ[k]; queued && f.NextAttempt.After(now) {
					// Waiting in the retry queue.
					mu.Lock()
					failures[k] = f
					mu.Unlock()
					sum.Pending++
					break
				}
				p.Log.Debug("copy", "pair", p.Name, "key", k, "size", s.Size, "why", copyReason(d, x))
				if p.DryRun {
					sum.WouldCopy = append(sum.WouldCopy, k)
					sum.WouldCopyBytes += s.Size
					p.Stats.Add(1, s.Size)
					break
				}
				job := copyJob{src: *s, slot: sl}
				if d != nil && x == nil && canVerify(*s, *d) {
					job.verify = d
				}
				sl.done = make(chan struct{})
				p.Stats.Add(1, s.Size)
				select {
				case jobs <- job:
				case <-ctx.Done():
					close(sl.done)
					deciding = context.Cause(ctx)
				}
			}
		case d != nil: // in the target only
			fromSource := x != nil
			if !fromSource && p.State != nil {
				p.foreign(sum, k, "not in the source")
				break
			}
			if !p.Delete {
				if x != nil {
					sl.e, sl.write = *x, true
					sum.DeletesPending++
					if len(sum.DeletesSample) < sampleSize {
						sum.DeletesSample = append(sum.DeletesSample, k)
					}
				}
				break
			}
			if x != nil && !x.Dst.matches(*d) {
				// Not what tandem wrote: someone else's, kept.
				p.foreign(sum, k, "gone from the source, but changed in the target since tandem wrote it: kept")
				break
			}
			p.Log.Debug("delete: gone from the source", "pair", p.Name, "key", k, "dry_run", p.DryRun)
			if p.DryRun {
				sum.WouldDelete = append(sum.WouldDelete, k)
				break
			}
			if x != nil {
				// Listed a moment ago; look again just before deleting.
				cur, err := p.Target.Stat(ctx, k)
				if err == nil && !x.Dst.matches(cur) {
					p.foreign(sum, k, "gone from the source, but changed in the target since tandem wrote it: kept")
					break
				}
			}
			if err := p.Target.Delete(ctx, k); err != nil {
				deciding = fmt.Errorf("delete %s: %w", k, err)
				break
			}
			p.Stats.Deleted.Add(1)
			sum.Deleted++
		}
		select {
		case order <- sl:
		case <-ctx.Done():
			if deciding == nil {
				deciding = context.Cause(ctx)
			}
		}
	}
	p.Stats.TotalKnown.Store(true)
	close(jobs)
	workers.Wait()
	close(order)
	werr := <-writeErr
	if deciding == nil {
		deciding = firstErr(src.err, dst.err, idx.err, context.Cause(ctx))
	}
	if deciding == nil {
		deciding = werr
	}

	sum.Adopted += adopted.Load()
	sum.Objects = p.Stats.Done.Load()
	sum.Bytes = p.Stats.DoneBytes.Load()
	sum.Failed = int64(len(failures)) - sum.Pending
	for _, f := range failures {
		if len(sum.FailedObjects) < sampleSize {
			sum.FailedObjects = append(sum.FailedObjects, f)
		}
	}
	if deciding != nil {
		if w != nil {
			// Keep what was copied for the next pass to find.
			w.flush(context.WithoutCancel(ctx))
		}
		return deciding
	}
	if p.DryRun {
		return nil // no watermark: nothing was copied
	}
	// Make every copy durable before the index or the watermark says so.
	if err := objstore.Sync(ctx, p.Target); err != nil {
		return err
	}
	if err := guard.Check(ctx); err != nil {
		return err
	}
	if p.State != nil {
		// Publish what was copied even if some objects failed: the index
		// only records finished copies.
		if err := w.publish(ctx, headETag); err != nil {
			return err
		}
		if err := p.saveRetryQueue(ctx, failures); err != nil {
			return err
		}
	}
	if len(failures) == 0 && (sum.Unsupported == 0 || p.IgnoreUnsupported) {
		wm := sum.Started
		sum.Watermark = &wm
	}
	return nil
}

// copyReason says why a key the source has is copied, for debug logs.
func copyReason(d *objstore.Info, x *entry) string {
	switch {
	case d == nil:
		return "not in the target"
	case x == nil:
		return "differs from the target, not recorded"
	}
	return "changed since the last pass"
}

type copyJob struct {
	src  objstore.Info
	slot *slot
	// verify is an unrecorded target object that may already hold the
	// source's bytes; a worker hashes the source to find out.
	verify *objstore.Info
}

func (p *Pair) foreign(sum *Summary, key, why string) {
	sum.Foreign++
	if len(sum.ForeignKeys) < sampleSize {
		sum.ForeignKeys = append(sum.ForeignKeys, key)
	}
	p.Log.Warn("object in the target did not come from the source", "pair", p.Name, "key", key, "why", why)
}

var contentHash = regexp.MustCompile(`^[0-9a-f]{32}(-[0-9]+)?$`)

// sameContent tells, from listings alone, whether the target already holds
// the source's bytes: equal sizes and either the source's time kept by the
// target or equal content hashes.
func sameContent(s, d objstore.Info, keepMtime bool) bool {
	if s.Size != d.Size {
		return false
	}
	if keepMtime && !s.ModTime.IsZero() && s.ModTime.Equal(d.ModTime) {
		return true
	}
	return s.ETag != "" && s.ETag == d.ETag && contentHash.MatchString(s.ETag)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func infoKey(i objstore.Info) string { return i.Key }
func entryKey(e entry) string        { return e.Key }

// stream is a sorted sequence read one item ahead.
type stream[T any] struct {
	name string
	next func() (T, error, bool)
	stop func()
	key  func(T) string
	skip func(string) bool
	cur  T
	has  bool
	last string
	err  error
}

func pull[T any](ctx context.Context, name string, seq iter.Seq2[T, error], key func(T) string, skip func(string) bool) *stream[T] {
	next, stop := iter.Pull2(seq)
	s := &stream[T]{name: name, next: next, stop: stop, key: key, skip: skip}
	s.advance()
	return s
}

func (s *stream[T]) advance() {
	s.has = false
	if s.err != nil {
		return
	}
	for {
		v, err, ok := s.next()
		if !ok {
			return
		}
		if err != nil {
			s.err = err
			return
		}
		k := s.key(v)
		if s.last != "" && k <= s.last {
			s.err = fmt.Errorf("%s is not in key order: %q came after %q; replication stopped without deleting anything", s.name, k, s.last)
			return
		}
		s.last = k
		if s.skip(k) {
			continue
		}
		s.cur, s.has = v, true
		return
	}
}

// take returns the current item if it has key k, and moves on.
func (s *stream[T]) take(k string) *T {
	if !s.has || s.key(s.cur) != k {
		return nil
	}
	v := s.cur
	s.advance()
	return &v
}

// minKey is the smallest current key; ok is false when every stream is done
// or one failed (a failed stream must not look like an empty one, or a pass
// would delete what it cannot see).
func minKey(src, dst *stream[objstore.Info], idx *stream[entry]) (string, bool) {
	if src.err != nil || dst.err != nil || idx.err != nil {
		return "", false
	}
	k, ok := "", false
	consider := func(has bool, key string) {
		if has && (!ok || key < k) {
			k, ok = key, true
		}
	}
	consider(src.has, src.key(src.cur))
	consider(dst.has, dst.key(dst.cur))
	consider(idx.has, idx.key(idx.cur))
	return k, ok
}
