// Package delta reads Delta Lake tables from any objstore.Bucket: it lists
// the log, reconstructs the snapshot at a version from JSON commits and
// checkpoints (classic, multi-part, V2 with sidecars), and checks that the
// protocol is one tandem can copy. It never trusts _last_checkpoint: the
// listing is the truth. Rules follow PROTOCOL.md in delta-io/delta.
package delta

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"tandem/internal/objstore"
)

var (
	// ErrNotDeltaTable: no _delta_log, or no commit in it.
	ErrNotDeltaTable = errors.New("not a Delta table")
	// ErrNotReconstructable: the version cannot be rebuilt from the log
	// that is left (vacuumed, gaps, missing checkpoint parts).
	ErrNotReconstructable = errors.New("version cannot be reconstructed")
	// ErrNoVersion: the version asked for is past the table's latest.
	ErrNoVersion = errors.New("no such version")
	// ErrUnsupported: a protocol or feature tandem must not copy blindly.
	ErrUnsupported = errors.New("unsupported table")
	// ErrOutsideTable: a file referenced by an absolute path outside the
	// table (a shallow clone, an absolute deletion vector).
	ErrOutsideTable = errors.New("file outside the table")
	// ErrCorrupt: a log file that cannot be parsed.
	ErrCorrupt = errors.New("corrupt Delta log")
)

// LogDir is the log folder of a table.
const LogDir = "_delta_log/"

// Kind is the kind of a log file.
type Kind int

const (
	Commit         Kind = iota // N.json
	Checkpoint                 // N.checkpoint.parquet
	CheckpointPart             // N.checkpoint.P.T.parquet
	CheckpointV2               // N.checkpoint.<uuid>.json|parquet
	Checksum                   // N.crc
	Compacted                  // N.M.compacted.json (log compaction)
	SidecarFile                // _sidecars/*
	LastCheckpoint             // _last_checkpoint
	OtherFile
)

// LogFile is one file of the log.
type LogFile struct {
	Key     string // relative to the table root, e.g. "_delta_log/00000000000000000003.json"
	Kind    Kind
	Version int64
	Part    int // CheckpointPart: 1-based part number
	Parts   int // CheckpointPart: number of parts
	Size    int64
	ETag    string
	ModTime time.Time // the file's time in the store (a copy resets it)
}

var (
	reCommit     = regexp.MustCompile(`^(\d{20})\.json$`)
	reCheckpoint = regexp.MustCompile(`^(\d{20})\.checkpoint\.parquet$`)
	rePart       = regexp.MustCompile(`^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$`)
	reV2         = regexp.MustCompile(`^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)$`)
	reCRC        = regexp.MustCompile(`^(\d{20})\.crc$`)
	reCompacted  = regexp.MustCompile(`^(\d{20})\.(\d{20})\.compacted\.json$`)
)

// parseLogName classifies a name relative to _delta_log/.
func parseLogName(name string) (LogFile, bool) {
	f := LogFile{Key: LogDir + name, Kind: OtherFile, Version: -1}
	v := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	switch {
	case strings.HasPrefix(name, "_sidecars/"):
		f.Kind = SidecarFile
	case name == "_last_checkpoint":
		f.Kind = LastCheckpoint
	case strings.Contains(name, "/"):
		return f, false
	default:
		if m := reCommit.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version = Commit, v(m[1])
		} else if m := reCheckpoint.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version = Checkpoint, v(m[1])
		} else if m := rePart.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version, f.Part, f.Parts = CheckpointPart, v(m[1]), int(v(m[2])), int(v(m[3]))
		} else if m := reV2.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version = CheckpointV2, v(m[1])
		} else if m := reCRC.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version = Checksum, v(m[1])
		} else if m := reCompacted.FindStringSubmatch(name); m != nil {
			f.Kind, f.Version = Compacted, v(m[2])
		}
	}
	return f, true
}

// Log is a listing of a table's _delta_log.
type Log struct {
	Files   []LogFile         // every file, by key
	commits map[int64]LogFile // version -> commit
	// checkpoints are the complete checkpoints, newest first.
	checkpoints []checkpoint
	// Oldest and Latest commit versions present.
	Oldest, Latest int64
}

// checkpoint is a complete checkpoint: one classic file, all parts of a
// multi-part one, or one V2 file (whose sidecars are checked on reading).
type checkpoint struct {
	Version int64
	Files   []LogFile
}

// ListLog lists the log of the table in b (b is rooted at the table).
func ListLog(ctx context.Context, b objstore.Bucket) (*Log, error) {
	l := &Log{commits: map[int64]LogFile{}, Oldest: -1, Latest: -1}
	parts := map[int64]map[int]map[int]LogFile{} // version -> parts total -> part -> file
	for info, err := range b.List(ctx, LogDir) {
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", b.URL()+"/"+LogDir, err)
		}
		f, ok := parseLogName(strings.TrimPrefix(info.Key, LogDir))
		if !ok {
			continue
		}
		f.Size, f.ETag, f.ModTime = info.Size, info.ETag, info.ModTime
		l.Files = append(l.Files, f)
		switch f.Kind {
		case Commit:
			l.commits[f.Version] = f
			if l.Oldest < 0 || f.Version < l.Oldest {
				l.Oldest = f.Version
			}
			l.Latest = max(l.Latest, f.Version)
		case Checkpoint, CheckpointV2:
			l.checkpoints = append(l.checkpoints, checkpoint{f.Version, []LogFile{f}})
		case CheckpointPart:
			if parts[f.Version] == nil {
				parts[f.Version] = map[int]map[int]LogFile{}
			}
			if parts[f.Version][f.Parts] == nil {
				parts[f.Version][f.Parts] = map[int]LogFile{}
			}
			parts[f.Version][f.Parts][f.Part] = f
		}
	}
	if len(l.Files) == 0 {
		return nil, fmt.Errorf("%s: %w: no %s folder", b.URL(), ErrNotDeltaTable, LogDir)
	}
	// A multi-part checkpoint counts only with every part present.
	for v, byTotal := range parts {
		for total, got := range byTotal {
			if len(got) != total {
				continue
			}
			cp := checkpoint{Version: v}
			for p := 1; p <= total; p++ {
				cp.Files = append(cp.Files, got[p])
			}
			l.checkpoints = append(l.checkpoints, cp)
		}
	}
	slices.SortFunc(l.checkpoints, func(a, b checkpoint) int { return int(b.Version - a.Version) })
	if l.Latest < 0 && len(l.checkpoints) == 0 {
		return nil, fmt.Errorf("%s: %w: %s holds no commit", b.URL(), ErrNotDeltaTable, LogDir)
	}
	if len(l.checkpoints) > 0 {
		l.Latest = max(l.Latest, l.checkpoints[0].Version)
	}
	return l, nil
}

// Commit returns the commit file of a version.
func (l *Log) Commit(v int64) (LogFile, bool) {
	f, ok := l.commits[v]
	return f, ok
}

// plan picks how to rebuild version v: the newest complete checkpoint at or
// below v whose following commits are all present, else commits from 0.
func (l *Log) plan(v int64) (*checkpoint, []LogFile, error) {
	if v < 0 || v > l.Latest {
		return nil, nil, fmt.Errorf("version %d: %w: the table's latest version is %d", v, ErrNoVersion, l.Latest)
	}
	commitsFrom := func(from int64) ([]LogFile, int64) {
		var out []LogFile
		for x := from; x <= v; x++ {
			f, ok := l.commits[x]
			if !ok {
				return nil, x
			}
			out = append(out, f)
		}
		return out, -1
	}
	missing := int64(-1)
	for i := range l.checkpoints {
		cp := &l.checkpoints[i]
		if cp.Version > v {
			continue
		}
		commits, gap := commitsFrom(cp.Version + 1)
		if gap < 0 {
			return cp, commits, nil
		}
		missing = gap
	}
	commits, gap := commitsFrom(0)
	if gap < 0 {
		return nil, commits, nil
	}
	if missing < 0 {
		missing = gap
	}
	return nil, nil, fmt.Errorf("version %d: %w: commit %d is missing and no complete checkpoint covers it (log has commits %d to %d)",
		v, ErrNotReconstructable, missing, l.Oldest, l.Latest)
}

// z85 is the ZeroMQ Base-85 alphabet the protocol uses for deletion vector
// ids.
const z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

func z85Decode(s string) ([]byte, error) {
	if len(s)%5 != 0 {
		return nil, fmt.Errorf("z85 text of length %d", len(s))
	}
	out := make([]byte, 0, len(s)/5*4)
	for i := 0; i < len(s); i += 5 {
		var v uint64
		for _, c := range []byte(s[i : i+5]) {
			d := strings.IndexByte(z85, c)
			if d < 0 {
				return nil, fmt.Errorf("%q is not z85", c)
			}
			v = v*85 + uint64(d)
		}
		if v > 0xffffffff {
			return nil, fmt.Errorf("z85 group out of range")
		}
		out = append(out, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return out, nil
}

// File returns the key, relative to the table root, of the file holding a
// deletion vector: "" for inline vectors. Absolute ("p") vectors must point
// inside the table (root is its URL).
func (dv *DeletionVector) File(root string) (string, error) {
	switch dv.StorageType {
	case "i":
		return "", nil
	case "p":
		return decodePath(dv.PathOrInlineDv, root)
	case "u":
		s := dv.PathOrInlineDv
		if len(s) < 20 {
			return "", fmt.Errorf("deletion vector %q: too short for a z85 uuid", s)
		}
		prefix, enc := s[:len(s)-20], s[len(s)-20:]
		raw, err := z85Decode(enc)
		if err != nil {
			return "", fmt.Errorf("deletion vector %q: %w", s, err)
		}
		id := fmt.Sprintf("%x-%x-%x-%x-%x", raw[0:4], raw[4:6], raw[6:8], raw[8:10], raw[10:16])
		name := "deletion_vector_" + id + ".bin"
		if prefix != "" {
			name = prefix + "/" + name
		}
		return decodePath(name, root)
	}
	return "", fmt.Errorf("deletion vector storage type %q: %w", dv.StorageType, ErrUnsupported)
}
