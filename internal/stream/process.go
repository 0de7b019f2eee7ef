package stream

import (
	"context"
	"fmt"
	"time"

	"tandem/internal/fence"
)

// Processor delivers one region's log to the sink while that region holds
// the lease (Guard: the fence of every write tandem makes). It starts by
// raising the sink's epoch to its own, so that a delivery of the old
// holder that has not committed yet is refused, and resumes from the
// position the sink recorded for its region: never later than the last
// event applied from this log.
type Processor struct {
	Region   string
	Log      Log
	Sink     *Sink
	Consumer string
	Guard    *fence.Guard
	// Batch is the most events delivered in one transaction.
	Batch int
	// Delivered is told of every committed delivery and its position.
	Delivered func(r Result, pos int64)
}

// Run delivers until ctx ends (nil) or an error: fenced (the lease moved;
// final for this Processor), or a broker or sink error (make a new one to
// try again).
func (p *Processor) Run(ctx context.Context) error {
	if err := p.Guard.Check(ctx); err != nil {
		return err
	}
	d := Delivery{Epoch: p.Guard.Epoch(), Region: p.Region, Consumer: p.Consumer}
	if err := p.Sink.Fence(ctx, d.Epoch, p.Region); err != nil {
		return err
	}
	pos, err := p.Sink.Position(ctx, p.Consumer)
	if err != nil {
		return err
	}
	batch := max(p.Batch, 1)
	for ctx.Err() == nil {
		if err := p.Guard.Check(ctx); err != nil {
			return err
		}
		evs, err := p.Log.Read(ctx, pos, batch, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			continue
		}
		Named(p.Region, evs)
		// Before any lease the guard grants epoch 0; the first lease
		// taken pins its epoch, which the deliveries then carry.
		d.Epoch = p.Guard.Epoch()
		r, err := p.Sink.Deliver(ctx, d, evs, p.Guard.Check)
		if err != nil && !fence.Refused(err) && len(evs) > 1 {
			// One event the statements refuse stops the batch: deliver
			// one by one, so the error names it and the events before it
			// take effect.
			r = Result{}
			for i := range evs {
				var one Result
				one, err = p.Sink.Deliver(ctx, d, evs[i:i+1], p.Guard.Check)
				if err != nil {
					evs = evs[:i]
					break
				}
				r.Applied += one.Applied
				r.Duplicates += one.Duplicates
			}
		}
		if len(evs) > 0 && (err == nil || r.Applied+r.Duplicates > 0) {
			pos = evs[len(evs)-1].Pos
			if p.Delivered != nil {
				p.Delivered(r, pos)
			}
		}
		if err != nil {
			return fmt.Errorf("stream delivery in %s: %w", p.Region, err)
		}
	}
	return nil
}

// Follow keeps, while ctx lasts, the sink's position of a region that
// does not process (the standby) over the events of its log that the sink
// has applied already: the position it resumes from when it takes over.
func Follow(ctx context.Context, region string, l Log, sink *Sink, consumer string, batch int) error {
	_, err := FollowTo(ctx, region, l, sink, consumer, batch, 0)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// FollowTo follows until the position reaches upto (0: until ctx ends)
// and returns the position.
func FollowTo(ctx context.Context, region string, l Log, sink *Sink, consumer string, batch int, upto int64) (int64, error) {
	pos, err := sink.Position(ctx, consumer)
	if err != nil {
		return pos, err
	}
	for ctx.Err() == nil && (upto == 0 || pos < upto) {
		evs, err := l.Read(ctx, pos, max(batch, 1), 200*time.Millisecond)
		if err != nil {
			return pos, err
		}
		if len(evs) == 0 {
			continue
		}
		next, err := sink.Follow(ctx, consumer, pos, Named(region, evs))
		if err != nil {
			return pos, err
		}
		if next == pos {
			// The next event is not applied yet: look again in a moment.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		pos = next
	}
	return pos, ctx.Err()
}
