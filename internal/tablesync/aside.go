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

// MoveLogAside moves the target's whole _delta_log to
// _tandem_moved_aside/<time>/_delta_log/, for a full resync of a diverged
// target. Nothing is deleted before everything is copied, and the log is
// then removed newest version first, so a crash leaves either the whole log
// or an older prefix of it, never a hole. Data files stay: a resync reuses
// those still live.
func MoveLogAside(ctx context.Context, target objstore.Bucket) (string, int, error) {
	var files []objstore.Info
	for info, err := range target.List(ctx, delta.LogDir) {
		if err != nil {
			return "", 0, err
		}
		files = append(files, info)
	}
	if len(files) == 0 {
		return "", 0, nil
	}
	dest := AsideDir + time.Now().UTC().Format("20060102T150405.000Z") + "/"
	for _, f := range files {
		if err := copyWithin(ctx, target, f.Key, dest+f.Key); err != nil {
			return "", 0, fmt.Errorf("move %s aside: %w", f.Key, err)
		}
	}
	if err := objstore.Sync(ctx, target); err != nil {
		return "", 0, err
	}
	// _last_checkpoint first, then by version, newest first.
	slices.SortFunc(files, func(a, b objstore.Info) int { return strings.Compare(b.Key, a.Key) })
	slices.SortStableFunc(files, func(a, b objstore.Info) int {
		return boolInt(strings.HasSuffix(b.Key, "_last_checkpoint")) - boolInt(strings.HasSuffix(a.Key, "_last_checkpoint"))
	})
	for _, f := range files {
		if err := target.Delete(ctx, f.Key); err != nil {
			return "", 0, err
		}
	}
	return dest, len(files), nil
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
