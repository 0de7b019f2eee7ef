package tablesync

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"tandem/internal/delta"
	"tandem/internal/objstore"
)

// AsideDir is where MoveLogAside keeps a target's log, inside the table:
// Delta readers look only at _delta_log and the files it names.
const AsideDir = "_tandem_moved_aside/"

// MoveLogAside moves the target's whole _delta_log aside, for a full
// resync of a diverged target. Data files stay: a resync reuses those still
// live.
func MoveLogAside(ctx context.Context, target objstore.Bucket) (string, int, error) {
	var keys []string
	for info, err := range target.List(ctx, delta.LogDir) {
		if err != nil {
			return "", 0, err
		}
		keys = append(keys, info.Key)
	}
	if len(keys) == 0 {
		return "", 0, nil
	}
	dest, err := MoveAside(ctx, target, keys)
	return dest, len(keys), err
}

// MoveAside moves the named log files to _tandem_moved_aside/<time>/ inside
// the table. Nothing is deleted before everything is copied, and the files
// are then removed _last_checkpoint first and newest version first, so a
// crash leaves the log whole or an older prefix of it, never a hole.
func MoveAside(ctx context.Context, target objstore.Bucket, keys []string) (string, error) {
	dest := AsideDir + time.Now().UTC().Format("20060102T150405.000Z") + "/"
	for _, k := range keys {
		if err := copyWithin(ctx, target, k, dest+k); err != nil {
			return "", fmt.Errorf("move %s aside: %w", k, err)
		}
	}
	if err := objstore.Sync(ctx, target); err != nil {
		return "", err
	}
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(b, a) })
	slices.SortStableFunc(keys, func(a, b string) int {
		return boolInt(strings.HasSuffix(b, "_last_checkpoint")) - boolInt(strings.HasSuffix(a, "_last_checkpoint"))
	})
	for _, k := range keys {
		if err := target.Delete(ctx, k); err != nil {
			return "", err
		}
	}
	return dest, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func copyWithin(ctx context.Context, b objstore.Bucket, from, to string) error {
	rc, info, err := b.Get(ctx, from)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = b.Put(ctx, to, rc, info.Size, objstore.PutOptions{ModTime: info.ModTime})
	return err
}
