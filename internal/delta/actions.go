package delta

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// The actions of the Delta log (PROTOCOL.md, "Actions"), with the fields
// tandem needs. Tags serve both JSON commits and Parquet checkpoints. Fields
// tandem does not need (stats, tags) are not read, so a checkpoint of a
// million files costs only what these structs hold.

// DeletionVector describes the rows deleted from a data file.
type DeletionVector struct {
	StorageType    string `json:"storageType" parquet:"storageType"`
	PathOrInlineDv string `json:"pathOrInlineDv" parquet:"pathOrInlineDv"`
	Offset         *int32 `json:"offset,omitempty" parquet:"offset,optional"`
	SizeInBytes    int32  `json:"sizeInBytes" parquet:"sizeInBytes"`
	Cardinality    int64  `json:"cardinality" parquet:"cardinality"`
}

// UniqueID identifies the vector: storage type, path or data, and offset.
func (dv *DeletionVector) UniqueID() string {
	if dv == nil {
		return ""
	}
	id := dv.StorageType + dv.PathOrInlineDv
	if dv.Offset != nil {
		id += "@" + strconv.Itoa(int(*dv.Offset))
	}
	return id
}

// Add is a data file in the table.
type Add struct {
	Path             string          `json:"path" parquet:"path"`
	Size             int64           `json:"size" parquet:"size"`
	ModificationTime int64           `json:"modificationTime" parquet:"modificationTime"`
	DataChange       bool            `json:"dataChange" parquet:"dataChange"`
	DeletionVector   *DeletionVector `json:"deletionVector,omitempty" parquet:"deletionVector,optional"`
	// PartitionValues are the partition columns' values (physical names
	// under column mapping), as strings.
	PartitionValues map[string]string `json:"partitionValues,omitempty" parquet:"partitionValues,optional"`
}

// Remove takes a data file out of the table.
type Remove struct {
	Path              string          `json:"path" parquet:"path"`
	DeletionTimestamp *int64          `json:"deletionTimestamp,omitempty" parquet:"deletionTimestamp,optional"`
	DataChange        bool            `json:"dataChange" parquet:"dataChange"`
	DeletionVector    *DeletionVector `json:"deletionVector,omitempty" parquet:"deletionVector,optional"`
}

// Metadata is the table's metadata (metaData action).
type Metadata struct {
	ID               string            `json:"id" parquet:"id"`
	Name             *string           `json:"name,omitempty" parquet:"name,optional"`
	SchemaString     string            `json:"schemaString" parquet:"schemaString"`
	PartitionColumns []string          `json:"partitionColumns" parquet:"partitionColumns,list"`
	Configuration    map[string]string `json:"configuration" parquet:"configuration"`
	CreatedTime      *int64            `json:"createdTime,omitempty" parquet:"createdTime,optional"`
}

// Protocol is the table's protocol action.
type Protocol struct {
	MinReaderVersion int32    `json:"minReaderVersion" parquet:"minReaderVersion"`
	MinWriterVersion int32    `json:"minWriterVersion" parquet:"minWriterVersion"`
	ReaderFeatures   []string `json:"readerFeatures,omitempty" parquet:"readerFeatures,list,optional"`
	WriterFeatures   []string `json:"writerFeatures,omitempty" parquet:"writerFeatures,list,optional"`
}

// Txn is an application's transaction version (idempotent writers).
type Txn struct {
	AppID       string `json:"appId" parquet:"appId"`
	Version     int64  `json:"version" parquet:"version"`
	LastUpdated *int64 `json:"lastUpdated,omitempty" parquet:"lastUpdated,optional"`
}

// DomainMetadata is a named configuration; Removed deletes the domain.
type DomainMetadata struct {
	Domain        string `json:"domain" parquet:"domain"`
	Configuration string `json:"configuration" parquet:"configuration"`
	Removed       bool   `json:"removed" parquet:"removed"`
}

// CheckpointMetadata opens a V2 checkpoint.
type CheckpointMetadata struct {
	Version int64 `json:"version" parquet:"version"`
}

// Sidecar names a file of a V2 checkpoint's adds and removes, relative to
// _delta_log/_sidecars/.
type Sidecar struct {
	Path             string `json:"path" parquet:"path"`
	SizeInBytes      int64  `json:"sizeInBytes" parquet:"sizeInBytes"`
	ModificationTime int64  `json:"modificationTime" parquet:"modificationTime"`
}

// CDC is a change data file.
type CDC struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// Job is what Databricks writes about the job run that made a commit.
type Job struct {
	JobID    flexString `json:"jobId"`
	JobRunID flexString `json:"jobRunId"`
	RunID    flexString `json:"runId"`
}

// CommitInfo is the provenance of a commit. InCommitTimestamp, when
// present, is the reliable commit time (it survives a copy; file times do
// not).
type CommitInfo struct {
	Timestamp         *int64 `json:"timestamp,omitempty"`
	InCommitTimestamp *int64 `json:"inCommitTimestamp,omitempty"`
	Operation         string `json:"operation,omitempty"`
	Job               *Job   `json:"job,omitempty"`
	// UserMetadata is what the writer set (Spark: the userMetadata option).
	UserMetadata string `json:"userMetadata,omitempty"`
}

// flexString accepts a JSON string or number.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("not a string or number: %s", b)
	}
	*f = flexString(n.String())
	return nil
}

// Action is one line of a commit or row of a checkpoint: exactly one field
// is set (unknown actions leave all nil and are ignored, as the protocol
// asks).
type Action struct {
	Add                *Add                `json:"add,omitempty" parquet:"add,optional"`
	Remove             *Remove             `json:"remove,omitempty" parquet:"remove,optional"`
	MetaData           *Metadata           `json:"metaData,omitempty" parquet:"metaData,optional"`
	Protocol           *Protocol           `json:"protocol,omitempty" parquet:"protocol,optional"`
	Txn                *Txn                `json:"txn,omitempty" parquet:"txn,optional"`
	DomainMetadata     *DomainMetadata     `json:"domainMetadata,omitempty" parquet:"domainMetadata,optional"`
	CheckpointMetadata *CheckpointMetadata `json:"checkpointMetadata,omitempty" parquet:"checkpointMetadata,optional"`
	Sidecar            *Sidecar            `json:"sidecar,omitempty" parquet:"sidecar,optional"`
	CommitInfo         *CommitInfo         `json:"commitInfo,omitempty" parquet:"-"`
	CDC                *CDC                `json:"cdc,omitempty" parquet:"-"`
}

// decodePath turns a log path (an RFC 2396 URI, relative or absolute) into
// an object key relative to the table root, for a data file or a deletion
// vector. Absolute URIs are accepted only when they point inside the table
// (root is the table's URL), and every key must stay inside it and out of
// its _delta_log/ (inside).
func decodePath(p, root string) (string, error) {
	rel, err := resolve(p, root)
	if err == nil && (rel+"/" == LogDir || strings.HasPrefix(rel, LogDir)) {
		return "", fmt.Errorf("%w: %s is inside %s, where only the log's files go", ErrOutsideTable, p, LogDir)
	}
	return rel, err
}

// sidecarKey is the key of a checkpoint's sidecar file: a name in
// _delta_log/_sidecars/, or a path that resolves there.
func sidecarKey(p, root string) (string, error) {
	const dir = LogDir + "_sidecars/"
	if !strings.Contains(p, "/") {
		return inside(dir+p, p)
	}
	rel, err := resolve(p, root)
	if err == nil && !strings.HasPrefix(rel, dir) {
		return "", fmt.Errorf("%w: sidecar %s is not in %s", ErrOutsideTable, p, dir)
	}
	return rel, err
}

// resolve turns a log path into a clean key inside the table.
func resolve(p, root string) (string, error) {
	// Most paths are plain relative names: skip URI parsing for them.
	if p != "" && !strings.ContainsAny(p, "%:?#") && p[0] != '/' && !strings.Contains(p, "..") && !strings.Contains(p, "//") && !strings.HasPrefix(p, "./") && !strings.Contains(p, "/./") && !strings.HasSuffix(p, "/.") && p != "." {
		return inside(p, p)
	}
	u, err := url.Parse(p)
	if err != nil {
		return "", fmt.Errorf("path %q is not a valid URI: %w", p, err)
	}
	r, err := url.Parse(root)
	if err != nil {
		return "", err
	}
	if u.Scheme == "" && !strings.HasPrefix(u.Path, "/") {
		return inside(u.Path, p)
	}
	if u.Scheme == "" {
		// An absolute path without a scheme lives on the table's own
		// file system.
		u.Scheme, u.Host = r.Scheme, r.Host
	}
	// Spark writes file:/x for file:///x; compare schemes and paths.
	if normScheme(u.Scheme) == normScheme(r.Scheme) && u.Host == r.Host {
		base := strings.TrimSuffix(r.Path, "/") + "/"
		if rel, ok := strings.CutPrefix(u.Path, base); ok && rel != "" {
			return inside(rel, p)
		}
	}
	return "", fmt.Errorf("%w: %s", ErrOutsideTable, p)
}

// inside returns rel, the key a log path p resolved to, if it names a file
// of the table: a clean relative path that does not climb out of the table
// (no "..", no leading "/", no empty or "." segment) and holds no NUL or
// line break.
func inside(rel, p string) (string, error) {
	c := path.Clean(rel)
	switch {
	case c == "." || c == ".." || strings.HasPrefix(c, "../") || strings.HasPrefix(c, "/"):
		return "", fmt.Errorf("%w: %s", ErrOutsideTable, p)
	case c != rel:
		return "", fmt.Errorf("%w: %s is not a clean path (it resolves to %s)", ErrOutsideTable, p, c)
	case strings.ContainsAny(c, "\x00\n\r"):
		return "", fmt.Errorf("%w: %q holds a NUL or a line break", ErrOutsideTable, p)
	}
	return c, nil
}

func normScheme(s string) string {
	switch s {
	case "s3a", "s3n":
		return "s3"
	}
	return s
}
