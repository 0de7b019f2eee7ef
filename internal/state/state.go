// Package state keeps tandem's records (replication status, indexes, and
// later group manifests, plan runs and leases) as JSON objects in a region's
// state location. Records are written atomically; Update is compare-and-swap
// on the object's ETag, so two tandem processes never lose each other's
// writes.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"tandem/internal/objstore"
)

// Store is a state location, or a folder of one (see Sub).
type Store struct {
	Bucket objstore.Bucket
	Prefix string // "" or ending in "/"
}

// Sub returns the store for a folder below s.
func (s Store) Sub(name string) Store {
	return Store{Bucket: s.Bucket, Prefix: s.Prefix + name + "/"}
}

// Key is the object key of a record name.
func (s Store) Key(name string) string { return s.Prefix + name }

// URL names the record for messages.
func (s Store) URL(name string) string {
	return s.Bucket.URL() + "/" + s.Key(name)
}

// Load reads the record into v and returns its ETag. A missing record gives
// an error wrapping objstore.ErrNotExist and leaves v alone.
func (s Store) Load(ctx context.Context, name string, v any) (string, error) {
	data, info, err := objstore.ReadAll(ctx, s.Bucket, s.Key(name))
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return "", fmt.Errorf("state record %s is corrupt: %w", s.URL(name), err)
	}
	return info.ETag, nil
}

// Save writes the record. etag "" writes unconditionally; otherwise the write
// succeeds only if the record still has that ETag. Create makes it only if
// absent. Both fail with an error wrapping objstore.ErrPrecondition.
func (s Store) Save(ctx context.Context, name string, v any, opts objstore.PutOptions) (string, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	data = append(data, '\n')
	info, err := s.Bucket.Put(ctx, s.Key(name), bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return "", err
	}
	// A record is durable when Save returns.
	if err := objstore.Sync(ctx, s.Bucket); err != nil {
		return "", err
	}
	return info.ETag, nil
}

// Prune deletes the oldest records in folder dir until keep are left;
// records' names sort oldest first (they start with a time). It is best
// effort: a listing that fails prunes nothing.
func (s Store) Prune(ctx context.Context, dir string, keep int) {
	var keys []string
	for info, err := range s.Bucket.List(ctx, s.Key(dir+"/")) {
		if err != nil {
			return
		}
		keys = append(keys, info.Key)
	}
	for len(keys) > keep {
		s.Bucket.Delete(ctx, keys[0])
		keys = keys[1:]
	}
}

// Exists reports whether the record exists.
func (s Store) Exists(ctx context.Context, name string) (bool, error) {
	_, err := s.Bucket.Stat(ctx, s.Key(name))
	if errors.Is(err, objstore.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
