// Package tablesync copies one Delta table to another location so that the
// target is a valid Delta table whose snapshot at a version equals the
// source's, with the source's version numbers and history. It copies only
// what the target lacks: files live at the version and not yet there, the
// newest checkpoint, and the commits after the target's. Writes go in an
// order that never shows a reader a version whose files are missing: data
// files and deletion vectors, then the checkpoint and its sidecars, then
// commits in ascending order, each created only if absent.
package tablesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem/internal/delta"
	"tandem/internal/objstore"
	"tandem/internal/progress"
	"tandem/internal/replicate"
)

var (
	// ErrDiverged: the target holds a commit the source does not have, or
	// a different one at the same version.
	ErrDiverged = errors.New("target diverged from the source")
	// ErrResyncNeeded: the source no longer has what an incremental sync
	// needs (its log or files were cleaned up past the target's version).
	ErrResyncNeeded = errors.New("a full resync is needed")
	// ErrSourceMissing: a file the version needs is missing in the source.
	ErrSourceMissing = errors.New("file missing in the source")
)

// Sync copies a table.
type Sync struct {
	Source, Target objstore.Bucket // rooted at the tables
	Transfers      int             // files copied at once (default 16)
	Log            *slog.Logger
	// Copier settings (part sizes, retries); Source and Target are set here.
	Copier replicate.Copier
	// Progress, when set, counts the files as they are copied: its total
	// grows by this sync's plan, and is known after it unless More (a
	// group's syncs share one, the last one completes it).
	Progress *progress.Counters
	More     bool
}

// Result says what a sync did.
type Result struct {
	Source      string `json:"source"`
	Target      string `json:"target"`
	Version     int64  `json:"version"`
	FromVersion int64  `json:"from_version"` // the target's latest before, -1 if empty
	Files       int64  `json:"files_copied"`
	Bytes       int64  `json:"bytes_copied"`
	FilesThere  int64  `json:"files_already_there"`
	LogFiles    int    `json:"log_files_copied"`
	LogBytes    int64  `json:"log_bytes_copied"`
	// LeftoversRemoved counts what interrupted syncs had left in the
	// target (staged files, unfinished uploads), removed by this one.
	LeftoversRemoved int     `json:"leftovers_removed,omitempty"`
	Seconds          float64 `json:"seconds"`
	// Phase durations, seconds.
	PlanSeconds float64 `json:"plan_seconds"`
	DataSeconds float64 `json:"data_seconds"`
	LogSeconds  float64 `json:"log_seconds"`
}

// plan is what a sync will copy.
type plan struct {
	snap    *delta.Snapshot
	tgtLog  *delta.Log // nil: the target is empty
	commits []delta.LogFile
	data    []objstore.Info
}

// PlanSummary is what a sync would copy.
type PlanSummary struct {
	Version  int64 `json:"version"`
	Files    int   `json:"files_to_copy"` // data and deletion vector files
	Bytes    int64 `json:"bytes_to_copy"` // their bytes, where the log says (deletion vector files are not counted)
	Commits  int   `json:"commits_to_copy"`
	Existing int64 `json:"files_already_there"`
}

// Plan reports what a sync to version would copy, without copying.
func Plan(ctx context.Context, source, target objstore.Bucket, version int64) (PlanSummary, error) {
	s := &Sync{Source: source, Target: target}
	var res Result
	p, err := s.plan(ctx, version, &res)
	if err != nil {
		return PlanSummary{}, err
	}
	out := PlanSummary{Version: p.snap.Version, Files: len(p.data), Commits: len(p.commits), Existing: res.FilesThere}
	for _, f := range p.data {
		out.Bytes += max(f.Size, 0)
	}
	return out, nil
}

func (s *Sync) plan(ctx context.Context, version int64, res *Result) (*plan, error) {
	src, err := delta.Open(ctx, s.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if version < 0 {
		version = src.Log.Latest
	}
	res.Version = version
	p := &plan{}
	if p.snap, err = src.Snapshot(ctx, version); err != nil {
		return nil, err
	}
	p.tgtLog, err = delta.ListLog(ctx, s.Target)
	switch {
	case errors.Is(err, delta.ErrNotDeltaTable):
		p.tgtLog = nil
	case err != nil:
		return nil, err
	}
	if p.commits, err = s.commitsToCopy(ctx, src, p.snap, p.tgtLog, res); err != nil {
		return nil, err
	}
	existing, err := s.targetFiles(ctx)
	if err != nil {
		return nil, err
	}
	if p.data, err = dataFiles(p.snap, s.Source.URL(), existing, res); err != nil {
		return nil, fmt.Errorf("%s at version %d: %w", s.Source.URL(), version, err)
	}
	return p, nil
}

// Run makes the target the source's table at version (version < 0: the
// source's latest).
func (s *Sync) Run(ctx context.Context, version int64) (Result, error) {
	start := time.Now()
	res := Result{Source: s.Source.URL(), Target: s.Target.URL(), FromVersion: -1}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Transfers <= 0 {
		s.Transfers = 16
	}
	p, err := s.plan(ctx, version, &res)
	if err != nil {
		return res, err
	}
	res.PlanSeconds = time.Since(start).Seconds()
	if res.LeftoversRemoved, err = objstore.Sweep(ctx, s.Target, start); err != nil {
		return res, err
	}
	s.Log.Debug("table sync planned", "source", s.Source.URL(), "target", s.Target.URL(), "version", p.snap.Version,
		"from_version", res.FromVersion, "data_files", len(p.data), "commits", len(p.commits), "already_there", res.FilesThere)
	var cp []objstore.Info
	for _, f := range p.snap.Checkpoint {
		if p.tgtLog == nil || !hasFile(p.tgtLog, f.Key) {
			cp = append(cp, objstore.Info{Key: f.Key, Size: f.Size})
		}
	}
	if s.Progress != nil {
		n, bytes := int64(len(p.data)+len(cp)+len(p.commits)), int64(0)
		for _, files := range [][]objstore.Info{p.data, cp} {
			for _, f := range files {
				bytes += max(f.Size, 0) // a deletion vector's size is not in the log
			}
		}
		for _, f := range p.commits {
			bytes += f.Size
		}
		s.Progress.Add(n, bytes)
		if !s.More {
			s.Progress.TotalKnown.Store(true)
		}
	}

	// 1. Data files and deletion vectors.
	t := time.Now()
	if err := s.copyAll(ctx, p.data, &res.Files, &res.Bytes); err != nil {
		return res, err
	}
	if err := objstore.Sync(ctx, s.Target); err != nil {
		return res, err
	}
	res.DataSeconds = time.Since(t).Seconds()

	// 2. The checkpoint and its sidecars, if the target lacks them; 3. the
	// commits, ascending, each created only if absent.
	t = time.Now()
	var cpFiles int64
	if err := s.copyAll(ctx, cp, &cpFiles, &res.LogBytes); err != nil {
		return res, err
	}
	res.LogFiles += int(cpFiles)
	for _, f := range p.commits {
		n, err := s.publish(ctx, f)
		if err != nil {
			return res, err
		}
		s.copied(f.Size)
		if n > 0 {
			res.LogFiles++
			res.LogBytes += n
		}
	}
	res.LogSeconds = time.Since(t).Seconds()
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// commitsToCopy checks that the target is a prefix of the source's history
// and returns the commit files the target lacks up to the version.
func (s *Sync) commitsToCopy(ctx context.Context, src *delta.Table, snap *delta.Snapshot, tgt *delta.Log, res *Result) ([]delta.LogFile, error) {
	first := int64(0)
	if len(snap.Checkpoint) > 0 {
		first = snap.Checkpoint[0].Version // include the checkpoint's own commit when present
	}
	if tgt != nil {
		res.FromVersion = tgt.Latest
		if tgt.Latest > snap.Version {
			return nil, fmt.Errorf("%w: %s is at version %d, newer than %d", ErrDiverged, s.Target.URL(), tgt.Latest, snap.Version)
		}
		// The target's newest commit must be the source's.
		if f, ok := tgt.Commit(tgt.Latest); ok {
			same, err := s.sameCommit(ctx, src, f)
			if err != nil {
				return nil, err
			}
			if !same {
				return nil, fmt.Errorf("%w: commit %d in %s differs from the source's", ErrDiverged, tgt.Latest, s.Target.URL())
			}
		}
		first = tgt.Latest + 1
	}
	var out []delta.LogFile
	for v := first; v <= snap.Version; v++ {
		f, ok := src.Log.Commit(v)
		if !ok {
			if len(snap.Checkpoint) > 0 && v == snap.Checkpoint[0].Version {
				continue // the checkpoint stands for its commit
			}
			// A gap would leave the target's log non-contiguous.
			return nil, fmt.Errorf("%w: the source no longer has commit %d, which %s needs after its version %d (the source's log was cleaned up)",
				ErrResyncNeeded, v, s.Target.URL(), res.FromVersion)
		}
		out = append(out, f)
	}
	return out, nil
}

func (s *Sync) sameCommit(ctx context.Context, src *delta.Table, f delta.LogFile) (bool, error) {
	sf, ok := src.Log.Commit(f.Version)
	if !ok {
		return false, fmt.Errorf("%w: the source no longer has commit %d, the target's newest", ErrResyncNeeded, f.Version)
	}
	if sf.Size != f.Size {
		return false, nil
	}
	a, _, err := objstore.ReadAll(ctx, s.Source, sf.Key)
	if err != nil {
		return false, err
	}
	b, _, err := objstore.ReadAll(ctx, s.Target, f.Key)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

func hasFile(l *delta.Log, key string) bool {
	return slices.ContainsFunc(l.Files, func(g delta.LogFile) bool { return g.Key == key })
}

// targetFiles lists the target's data files with their sizes.
func (s *Sync) targetFiles(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for info, err := range s.Target.List(ctx, "") {
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(info.Key, delta.LogDir) {
			out[info.Key] = info.Size
		}
	}
	return out, nil
}

// dataFiles lists the data and deletion vector files live at the snapshot
// that the target does not hold.
func dataFiles(snap *delta.Snapshot, root string, existing map[string]int64, res *Result) ([]objstore.Info, error) {
	out := make([]objstore.Info, 0, len(snap.Files))
	add := func(key string, size int64, mtime int64) {
		if got, ok := existing[key]; ok && (size < 0 || got == size) {
			res.FilesThere++
			return
		}
		info := objstore.Info{Key: key, Size: size}
		if mtime > 0 {
			info.ModTime = time.UnixMilli(mtime)
		}
		out = append(out, info)
	}
	// A live path appears once; a deletion vector file can hold the
	// vectors of several files.
	dvSeen := map[string]bool{}
	for k, a := range snap.Files {
		add(k.Path, a.Size, a.ModificationTime)
		if a.DeletionVector != nil {
			f, err := a.DeletionVector.File(root)
			if err != nil {
				return nil, err
			}
			if f != "" && !dvSeen[f] {
				dvSeen[f] = true
				add(f, -1, 0) // size unknown: stat at copy time
			}
		}
	}
	return out, nil
}

// copied counts one file copied (or found published) in Progress.
func (s *Sync) copied(size int64) {
	if s.Progress != nil {
		s.Progress.Copied(size)
	}
}

// copyAll copies files in parallel, and returns when every copy is
// published or failed.
func (s *Sync) copyAll(ctx context.Context, files []objstore.Info, count, bytes *int64) error {
	c := &s.Copier
	c.Source, c.Target = s.Source, s.Target
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan objstore.Info)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range objstore.Writers(s.Target, s.Transfers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range jobs {
				if f.Size < 0 {
					st, err := s.Source.Stat(ctx, f.Key)
					if err != nil {
						cancel(s.missing(f.Key, err))
						continue
					}
					f.Size = st.Size
				}
				// Published in batches into a folder, after the worker
				// moved on (wg counts it until then).
				wg.Add(1)
				c.CopyLater(ctx, f, func(info objstore.Info, err error) {
					defer wg.Done()
					if err != nil {
						cancel(s.missing(f.Key, err))
						return
					}
					mu.Lock()
					*count++
					*bytes += info.Size
					mu.Unlock()
					s.copied(info.Size)
				})
			}
		}()
	}
	for _, f := range files {
		select {
		case jobs <- f:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

func (s *Sync) missing(key string, err error) error {
	if errors.Is(err, objstore.ErrNotExist) {
		return fmt.Errorf("%w: %s/%s is referenced by the version but is gone (vacuumed?); nothing was published", ErrSourceMissing, s.Source.URL(), key)
	}
	return err
}

// publish copies one commit only if absent. If it exists, it must be the
// source's: a rerun after a crash finds its own files, anything else is
// divergence. It returns the bytes written (0 when already there).
func (s *Sync) publish(ctx context.Context, f delta.LogFile) (int64, error) {
	data, _, err := objstore.ReadAll(ctx, s.Source, f.Key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", f.Key, err)
	}
	_, err = s.Target.Put(ctx, f.Key, bytes.NewReader(data), int64(len(data)), objstore.PutOptions{IfAbsent: true})
	if errors.Is(err, objstore.ErrPrecondition) {
		there, _, rerr := objstore.ReadAll(ctx, s.Target, f.Key)
		if rerr != nil {
			return 0, rerr
		}
		if !bytes.Equal(there, data) {
			return 0, fmt.Errorf("%w: %s/%s differs from the source's", ErrDiverged, s.Target.URL(), f.Key)
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return int64(len(data)), nil
}
