package replicate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"strings"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/state"
)

// The index records, for every object tandem replicated, the source version
// it copied and the target version it wrote. A rerun compares listings with
// it, so unchanged objects cost no request of their own, and a target object
// that differs from what tandem wrote is a foreign write.
//
// Layout in the pair's state folder:
//
//	index/current.json          which generation is complete
//	index/<gen>/<chunk>.gz      entries in key order, gzip, 20,000 a chunk
//
// A pass writes a new generation chunk by chunk as it goes (at least every
// 2 seconds) and publishes it by compare-and-swap on current.json. A pass
// that crashed leaves an unpublished generation whose chunks cover a prefix
// of the key space: the next pass reads those first and the published
// generation after them, so copies finished before the crash are not redone.

const chunkEntries = 20000

// chunkInterval bounds the work a crash can lose: a chunk is written at
// least this often while a pass runs.
var chunkInterval = 2 * time.Second

// ident is one version of an object as a listing shows it.
type ident struct {
	Size  int64
	ETag  string
	MTime int64 // Unix nanoseconds; 0 when unknown
}

func identOf(i objstore.Info) ident {
	var mt int64
	if !i.ModTime.IsZero() {
		mt = i.ModTime.UnixNano()
	}
	return ident{Size: i.Size, ETag: i.ETag, MTime: mt}
}

// matches reports whether a listed object is the version recorded. A
// recorded time of 0 (a store that does not report it on write) is ignored.
func (r ident) matches(i objstore.Info) bool {
	return r.Size == i.Size && r.ETag == i.ETag && (r.MTime == 0 || r.MTime == i.ModTime.UnixNano())
}

type entry struct {
	Key      string
	Src, Dst ident
}

type indexHead struct {
	Generation string    `json:"generation"`
	Chunks     int       `json:"chunks"`
	Entries    int64     `json:"entries"`
	Written    time.Time `json:"written"`
}

func appendIdent(b []byte, id ident) []byte {
	b = binary.AppendUvarint(b, uint64(id.Size))
	b = binary.AppendUvarint(b, uint64(len(id.ETag)))
	b = append(b, id.ETag...)
	return binary.AppendVarint(b, id.MTime)
}

func (e entry) append(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(e.Key)))
	b = append(b, e.Key...)
	b = appendIdent(b, e.Src)
	return appendIdent(b, e.Dst)
}

func readString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if n > 1<<16 {
		return "", fmt.Errorf("string of %d bytes", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return string(b), err
}

func readIdent(r *bufio.Reader) (id ident, err error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return id, err
	}
	id.Size = int64(size)
	if id.ETag, err = readString(r); err != nil {
		return id, err
	}
	id.MTime, err = binary.ReadVarint(r)
	return id, err
}

func readEntry(r *bufio.Reader) (e entry, err error) {
	if e.Key, err = readString(r); err != nil {
		return e, err // io.EOF at a clean end
	}
	if e.Src, err = readIdent(r); err != nil {
		return e, noEOF(err)
	}
	e.Dst, err = readIdent(r)
	return e, noEOF(err)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

type index struct {
	st state.Store // the pair's index folder
}

// pairRecord (pair.json in the index folder) binds an index to the pair
// whose copies it records: the stores' identities (objstore.Identity).
type pairRecord struct {
	Source  string    `json:"source"`
	Target  string    `json:"target"`
	Created time.Time `json:"created"`
}

// bind checks that the index belongs to the pair source -> target, and,
// with write, records that it does when it names no pair yet (a new index,
// or one written before indexes were bound). An index of another pair is
// refused: trusting its entries, a delete could remove what tandem never
// wrote into this target.
func (ix index) bind(ctx context.Context, source, target string, write bool) error {
	var rec pairRecord
	_, err := ix.st.Load(ctx, "pair.json", &rec)
	if errors.Is(err, objstore.ErrNotExist) {
		if !write {
			return nil
		}
		rec = pairRecord{Source: source, Target: target, Created: time.Now().UTC()}
		_, err = ix.st.Save(ctx, "pair.json", rec, objstore.PutOptions{IfAbsent: true})
		if errors.Is(err, objstore.ErrPrecondition) {
			return ix.bind(ctx, source, target, false) // bound meanwhile
		}
		return err
	}
	if err != nil {
		return err
	}
	if rec.Source != source || rec.Target != target {
		return fmt.Errorf("the replication index in %s belongs to %s -> %s, not to %s -> %s: tandem does not use another pair's records (a delete could remove what it never wrote). Give this pair a state folder of its own, or, to start it fresh, remove %s (the next pass records what the target already holds and copies the rest)",
			ix.st.URL(""), rec.Source, rec.Target, source, target, ix.st.URL(""))
	}
	return nil
}

func chunkKey(gen string, n int) string { return fmt.Sprintf("%s/%06d.gz", gen, n) }

// generations lists the generation folders present, oldest first.
func (ix index) generations(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var gens []string
	for info, err := range ix.st.Bucket.List(ctx, ix.st.Prefix) {
		if err != nil {
			return nil, err
		}
		rel := strings.TrimPrefix(info.Key, ix.st.Prefix)
		if i := strings.IndexByte(rel, '/'); i > 0 && !seen[rel[:i]] {
			seen[rel[:i]] = true
			gens = append(gens, rel[:i])
		}
	}
	slices.Sort(gens) // names start with a fixed-width time
	return gens, nil
}

// open returns the entries to compare with, in key order, and the ETag of
// current.json for the publishing compare-and-swap.
func (ix index) open(ctx context.Context) (iter.Seq2[entry, error], string, error) {
	var head indexHead
	etag, err := ix.st.Load(ctx, "current.json", &head)
	if err != nil && !errors.Is(err, objstore.ErrNotExist) {
		return nil, "", err
	}
	gens, err := ix.generations(ctx)
	if err != nil {
		return nil, "", err
	}
	// The newest unpublished generation newer than the published one is
	// what a crashed pass left.
	partial := ""
	if n := len(gens); n > 0 && gens[n-1] > head.Generation {
		partial = gens[n-1]
	}
	seq := func(yield func(entry, error) bool) {
		last := ""
		if partial != "" {
			for e, err := range ix.chunks(ctx, partial, -1) {
				if err != nil {
					yield(entry{}, err)
					return
				}
				if last != "" && e.Key <= last {
					// A chunk written twice (by a tandem before
					// 2026-12-06, whose retried write took a new
					// number): the rest of this generation is not
					// needed, the published one covers it.
					break
				}
				if !yield(e, nil) {
					return
				}
				last = e.Key
			}
		}
		if head.Generation == "" {
			return
		}
		for e, err := range ix.chunks(ctx, head.Generation, head.Chunks) {
			if err != nil {
				yield(entry{}, err)
				return
			}
			if e.Key <= last && last != "" {
				continue
			}
			if !yield(e, nil) {
				return
			}
		}
	}
	return seq, etag, nil
}

// chunks reads a generation's chunks; n < 0 reads until the first missing
// chunk (an unpublished generation).
func (ix index) chunks(ctx context.Context, gen string, n int) iter.Seq2[entry, error] {
	return func(yield func(entry, error) bool) {
		for c := 1; n < 0 || c <= n; c++ {
			rc, _, err := ix.st.Bucket.Get(ctx, ix.st.Key(chunkKey(gen, c)))
			if errors.Is(err, objstore.ErrNotExist) && n < 0 {
				return
			}
			if err != nil {
				yield(entry{}, fmt.Errorf("read replication index: %w", err))
				return
			}
			ok := readChunk(rc, ix.st.URL(chunkKey(gen, c)), yield)
			rc.Close()
			if !ok {
				return
			}
		}
	}
}

func readChunk(rc io.Reader, name string, yield func(entry, error) bool) bool {
	zr, err := gzip.NewReader(rc)
	if err != nil {
		return yield(entry{}, fmt.Errorf("replication index chunk %s is corrupt: %w", name, err))
	}
	br := bufio.NewReader(zr)
	for {
		e, err := readEntry(br)
		if err == io.EOF {
			return true
		}
		if err != nil {
			yield(entry{}, fmt.Errorf("replication index chunk %s is corrupt: %w", name, err))
			return false
		}
		if !yield(e, nil) {
			return false
		}
	}
}

// indexWriter writes a new generation.
type indexWriter struct {
	ix        index
	gen       string
	chunk     int
	entries   int64
	buf       bytes.Buffer
	zw        *gzip.Writer
	inChunk   int
	sealed    bool // buf holds a whole chunk not yet written
	lastFlush time.Time
	scratch   []byte
}

func newGeneration() string {
	var r [4]byte
	rand.Read(r[:])
	return fmt.Sprintf("g%016x-%s", time.Now().UnixNano(), hex.EncodeToString(r[:]))
}

func (ix index) create() *indexWriter {
	w := &indexWriter{ix: ix, gen: newGeneration(), lastFlush: time.Now()}
	w.zw, _ = gzip.NewWriterLevel(&w.buf, gzip.BestSpeed)
	return w
}

func (w *indexWriter) add(ctx context.Context, e entry) error {
	if w.sealed { // a chunk waits to be written
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.scratch = e.append(w.scratch[:0])
	w.zw.Write(w.scratch)
	w.inChunk++
	w.entries++
	if w.inChunk >= chunkEntries || time.Since(w.lastFlush) >= chunkInterval {
		return w.flush(ctx)
	}
	return nil
}

// flush writes the entries added since the last chunk as the next chunk. A
// chunk whose write failed stays the next chunk: the next flush writes the
// same bytes under the same name. (A failed write may still have landed, its
// answer lost; written again under a new number, its entries would follow
// themselves in the index.)
func (w *indexWriter) flush(ctx context.Context) error {
	w.lastFlush = time.Now()
	if w.inChunk == 0 && !w.sealed {
		return nil
	}
	if !w.sealed {
		if err := w.zw.Close(); err != nil {
			return err
		}
		w.sealed = true
	}
	key := w.ix.st.Key(chunkKey(w.gen, w.chunk+1))
	if _, err := w.ix.st.Bucket.Put(ctx, key, bytes.NewReader(w.buf.Bytes()), int64(w.buf.Len()), objstore.PutOptions{}); err != nil {
		return fmt.Errorf("write replication index: %w", err)
	}
	w.chunk++
	w.sealed = false
	w.buf.Reset()
	w.zw.Reset(&w.buf)
	w.inChunk = 0
	return nil
}

// publish makes the generation current if current.json still has etag, then
// deletes every other generation.
func (w *indexWriter) publish(ctx context.Context, etag string) error {
	if err := w.flush(ctx); err != nil {
		return err
	}
	if err := objstore.Sync(ctx, w.ix.st.Bucket); err != nil {
		return err
	}
	head := indexHead{Generation: w.gen, Chunks: w.chunk, Entries: w.entries, Written: time.Now().UTC()}
	opts := objstore.PutOptions{IfMatch: etag, IfAbsent: etag == ""}
	if _, err := w.ix.st.Save(ctx, "current.json", head, opts); err != nil {
		if errors.Is(err, objstore.ErrPrecondition) {
			return fmt.Errorf("another tandem process replicated this pair at the same time (%s changed): %w", w.ix.st.URL("current.json"), err)
		}
		return err
	}
	return w.ix.prune(ctx, w.gen)
}

// prune deletes every generation but keep.
func (ix index) prune(ctx context.Context, keep string) error {
	var stale []string
	for info, err := range ix.st.Bucket.List(ctx, ix.st.Prefix) {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(info.Key, ix.st.Prefix)
		if strings.Contains(rel, "/") && !strings.HasPrefix(rel, keep+"/") {
			stale = append(stale, info.Key)
		}
	}
	for _, k := range stale {
		if err := ix.st.Bucket.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
