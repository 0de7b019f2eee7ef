package delta

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"

	"tandem/internal/objstore"
)

// Table is a Delta table in a bucket rooted at the table.
type Table struct {
	Bucket objstore.Bucket
	Log    *Log
}

// Open lists the table's log.
func Open(ctx context.Context, b objstore.Bucket) (*Table, error) {
	l, err := ListLog(ctx, b)
	if err != nil {
		return nil, err
	}
	return &Table{Bucket: b, Log: l}, nil
}

// FileKey identifies a live file: its path and deletion vector.
type FileKey struct {
	Path string // relative to the table root, URI-decoded
	DV   string // DeletionVector.UniqueID()
}

// Snapshot is the state of a table at a version.
type Snapshot struct {
	Version  int64
	Protocol Protocol
	Metadata Metadata
	// Files are the live data files, keyed by path and deletion vector.
	Files   map[FileKey]*Add
	Txns    map[string]Txn
	Domains map[string]DomainMetadata
	// Checkpoint is the checkpoint it was rebuilt from (nil: commits from
	// 0), with its sidecars; Commits are the commit files applied after it.
	Checkpoint []LogFile
	Commits    []LogFile
}

// supportedReaderFeatures are the table features tandem can copy: none of
// them changes which files make up a version beyond what this package
// follows (deletion vectors, V2 checkpoints and sidecars).
var supportedReaderFeatures = map[string]bool{
	"columnMapping": true, "deletionVectors": true, "timestampNtz": true,
	"v2Checkpoint": true, "vacuumProtocolCheck": true, "typeWidening": true,
	"typeWidening-preview": true, "variantType": true, "variantType-preview": true,
	"variantShredding-preview": true, "collations-preview": true, "collations": true,
}

// CheckProtocol refuses protocols tandem cannot copy faithfully.
func CheckProtocol(p Protocol) error {
	switch {
	case p.MinReaderVersion > 3:
		return fmt.Errorf("%w: reader version %d is newer than tandem supports (3)", ErrUnsupported, p.MinReaderVersion)
	case p.MinReaderVersion < 1:
		return fmt.Errorf("%w: reader version %d is not valid", ErrUnsupported, p.MinReaderVersion)
	case p.MinReaderVersion == 3:
		for _, f := range p.ReaderFeatures {
			if f == "catalogManaged" || f == "catalogOwned-preview" {
				return fmt.Errorf("%w: the table is catalog-managed (%s): its commits live in the catalog, not only in the file system", ErrUnsupported, f)
			}
			if !supportedReaderFeatures[f] {
				return fmt.Errorf("%w: reader feature %q is unknown to tandem", ErrUnsupported, f)
			}
		}
	}
	return nil
}

// Snapshot rebuilds the table at version v (v < 0: the latest).
func (t *Table) Snapshot(ctx context.Context, v int64) (*Snapshot, error) {
	if v < 0 {
		v = t.Log.Latest
	}
	cp, commits, err := t.Log.plan(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Bucket.URL(), err)
	}
	s := &Snapshot{Version: v, Files: map[FileKey]*Add{}, Txns: map[string]Txn{}, Domains: map[string]DomainMetadata{}, Commits: commits}
	var haveProtocol, haveMetadata bool
	apply := func(a *Action, fromCheckpoint bool) error {
		// A checkpoint row without a deletion vector can decode as an
		// empty one.
		if a.Add != nil && a.Add.DeletionVector != nil && a.Add.DeletionVector.StorageType == "" {
			a.Add.DeletionVector = nil
		}
		if a.Remove != nil && a.Remove.DeletionVector != nil && a.Remove.DeletionVector.StorageType == "" {
			a.Remove.DeletionVector = nil
		}
		switch {
		case a.Add != nil:
			key, err := t.fileKey(a.Add.Path, a.Add.DeletionVector)
			if err != nil {
				return err
			}
			s.Files[key] = a.Add
		case a.Remove != nil:
			if fromCheckpoint {
				return nil // tombstones: not part of the live set
			}
			key, err := t.fileKey(a.Remove.Path, a.Remove.DeletionVector)
			if err != nil {
				return err
			}
			delete(s.Files, key)
		case a.Protocol != nil:
			s.Protocol, haveProtocol = *a.Protocol, true
		case a.MetaData != nil:
			s.Metadata, haveMetadata = *a.MetaData, true
		case a.Txn != nil:
			s.Txns[a.Txn.AppID] = *a.Txn
		case a.DomainMetadata != nil:
			if a.DomainMetadata.Removed {
				delete(s.Domains, a.DomainMetadata.Domain)
			} else {
				s.Domains[a.DomainMetadata.Domain] = *a.DomainMetadata
			}
		}
		return nil
	}
	if cp != nil {
		files, err := t.readCheckpoint(ctx, cp, func(a *Action) error { return apply(a, true) })
		if err != nil {
			return nil, err
		}
		s.Checkpoint = files
	}
	for _, c := range commits {
		if err := t.readCommit(ctx, c, func(a *Action) error { return apply(a, false) }); err != nil {
			return nil, err
		}
	}
	where := fmt.Sprintf("%s at version %d", t.Bucket.URL(), v)
	if !haveProtocol {
		return nil, fmt.Errorf("%s: %w: no protocol action in the log or checkpoint", where, ErrCorrupt)
	}
	if !haveMetadata {
		return nil, fmt.Errorf("%s: %w: no metaData action in the log or checkpoint", where, ErrCorrupt)
	}
	if err := CheckProtocol(s.Protocol); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return s, nil
}

func (t *Table) fileKey(path string, dv *DeletionVector) (FileKey, error) {
	rel, err := decodePath(path, t.Bucket.URL())
	if err != nil {
		return FileKey{}, err
	}
	return FileKey{Path: rel, DV: dv.UniqueID()}, nil
}

// ReadCommit streams the actions of one commit file in order.
func (t *Table) readCommit(ctx context.Context, f LogFile, fn func(*Action) error) error {
	rc, _, err := t.Bucket.Get(ctx, f.Key)
	if err != nil {
		return fmt.Errorf("read commit %d: %w", f.Version, err)
	}
	defer rc.Close()
	return readJSONActions(rc, t.Bucket.URL()+"/"+f.Key, fn)
}

// CommitActions returns the actions of commit v.
func (t *Table) CommitActions(ctx context.Context, v int64) ([]Action, error) {
	f, ok := t.Log.Commit(v)
	if !ok {
		return nil, fmt.Errorf("%s: commit %d: %w", t.Bucket.URL(), v, objstore.ErrNotExist)
	}
	var out []Action
	err := t.readCommit(ctx, f, func(a *Action) error { out = append(out, *a); return nil })
	return out, err
}

func readJSONActions(r io.Reader, name string, fn func(*Action) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var a Action
		if err := json.Unmarshal(b, &a); err != nil {
			return fmt.Errorf("%s line %d: %w: %v", name, line, ErrCorrupt, err)
		}
		if err := fn(&a); err != nil {
			return fmt.Errorf("%s line %d: %w", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// readCheckpoint streams a checkpoint's actions (and a V2 checkpoint's
// sidecars) and returns every file it read.
func (t *Table) readCheckpoint(ctx context.Context, cp *checkpoint, fn func(*Action) error) ([]LogFile, error) {
	files := slices.Clone(cp.Files)
	var sidecars []Sidecar
	collect := func(a *Action) error {
		if a.Sidecar != nil {
			sidecars = append(sidecars, *a.Sidecar)
			return nil
		}
		return fn(a)
	}
	for _, f := range cp.Files {
		var err error
		if strings.HasSuffix(f.Key, ".json") {
			err = t.readCommit(ctx, f, collect)
		} else {
			err = t.readParquet(ctx, f.Key, collect)
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint %d: %w", cp.Version, err)
		}
	}
	for _, sc := range sidecars {
		key, err := sidecarKey(sc.Path, t.Bucket.URL())
		if err != nil {
			return nil, fmt.Errorf("checkpoint %d: sidecar: %w", cp.Version, err)
		}
		if err := t.readParquet(ctx, key, fn); err != nil {
			return nil, fmt.Errorf("checkpoint %d: sidecar %s: %w", cp.Version, sc.Path, err)
		}
		files = append(files, LogFile{Key: key, Kind: SidecarFile, Version: cp.Version, Size: sc.SizeInBytes})
	}
	return files, nil
}

// readParquet streams the actions of a Parquet checkpoint or sidecar, in
// batches, into typed structs.
func (t *Table) readParquet(ctx context.Context, key string, fn func(*Action) error) error {
	f, size, cleanup, err := t.readerAt(ctx, key)
	if err != nil {
		return err
	}
	defer cleanup()
	return readParquetActions(f, size, t.Bucket.URL()+"/"+key, fn)
}

// readParquetActions reads the actions of a Parquet file of size bytes,
// named name in errors. A file the Parquet reader cannot make sense of
// (its panics included: it trusts the file's metadata) is ErrCorrupt.
func readParquetActions(f io.ReaderAt, size int64, name string, fn func(*Action) error) (err error) {
	corrupt := func(cause any) error { return fmt.Errorf("%s: %w: %v", name, ErrCorrupt, cause) }
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(p)
		}
	}()
	pf, err := parquet.OpenFile(f, size)
	if err != nil {
		return corrupt(err)
	}
	r := parquet.NewGenericReader[Action](pf)
	defer r.Close()
	batch := make([]Action, 1024)
	for {
		n, err := r.Read(batch)
		for i := range n {
			if ferr := fn(&batch[i]); ferr != nil {
				return ferr
			}
		}
		// Reuse the batch without keeping pointers to old rows alive.
		clear(batch[:n])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return corrupt(err)
		}
	}
}

// readerAt gives random access to an object: a local file directly, other
// stores through a temporary copy (checkpoints are read whole anyway).
func (t *Table) readerAt(ctx context.Context, key string) (io.ReaderAt, int64, func(), error) {
	rc, info, err := t.Bucket.Get(ctx, key)
	if err != nil {
		return nil, 0, nil, err
	}
	if f, ok := rc.(io.ReaderAt); ok {
		return f, info.Size, func() { rc.Close() }, nil
	}
	defer rc.Close()
	tmp, err := os.CreateTemp("", "tandem-checkpoint-*")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	n, err := io.Copy(tmp, rc)
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("read %s: %w", key, err)
	}
	return tmp, n, cleanup, nil
}
