package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/notify"
	"tandem/internal/tablegroup"
)

// GroupJob is a table group synced on a schedule.
type GroupJob struct {
	Group     *tablegroup.Group
	Owner     string
	Interval  time.Duration
	Retries   int           // attempts per scheduled sync
	RetryWait time.Duration // first wait between attempts, doubled
	Notifier  notify.Notifier
	NotifyOn  map[string]bool // "success", "failure"
	// Reopen, when set, opens the group again before each round in the
	// direction the region lease says now.
	Reopen func(ctx context.Context) (*tablegroup.Group, error)
}

type groupMetrics struct {
	syncs  *prometheus.CounterVec
	synced *prometheus.GaugeVec
}

func newGroupMetrics(reg prometheus.Registerer) *groupMetrics {
	m := &groupMetrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "group", Name: "sync_attempts_total",
			Help: "Group sync attempts, by status (succeeded, unchanged, failed)."}, []string{"group", "status"}),
		synced: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "group", Name: "cut_timestamp_seconds",
			Help: "Time of the run the standby holds (the manifest's cut)."}, []string{"group"}),
	}
	reg.MustRegister(m.syncs, m.synced)
	return m
}

// groupRound runs one scheduled sync with its retries and tells the owner.
func (d *Daemon) groupRound(ctx context.Context, j GroupJob) {
	log := d.Log.With("group", j.Group.Name)
	wait := j.RetryWait
	var last tablegroup.Attempt
	var err error
	for attempt := 1; attempt <= max(1, j.Retries); attempt++ {
		reason := "schedule"
		if attempt > 1 {
			reason = fmt.Sprintf("retry %d of %d", attempt-1, j.Retries-1)
		}
		last, _, err = j.Group.SyncRecorded(ctx, reason)
		if ctx.Err() != nil {
			return
		}
		d.groups.syncs.WithLabelValues(j.Group.Name, last.Status).Inc()
		if err == nil {
			break
		}
		log.Error("group sync failed", "attempt", attempt, "err", err)
		if attempt < j.Retries {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait *= 2
		}
	}
	if m, _, ok, _ := tablegroup.LoadManifest(ctx, j.Group.State); ok {
		d.groups.synced.WithLabelValues(j.Group.Name).Set(float64(m.CutTime.UnixNano()) / 1e9)
	}
	var e notify.Event
	switch {
	case err != nil && j.NotifyOn["failure"]:
		e = notify.Event{Status: "failed", Error: err.Error(),
			Summary: fmt.Sprintf("group %s: sync failed after %d attempts; the standby still holds the last manifest", j.Group.Name, max(1, j.Retries))}
	case err == nil && last.Status == "succeeded" && j.NotifyOn["success"]:
		e = notify.Event{Status: "succeeded", RunID: last.RunID, Versions: last.Versions,
			Summary: fmt.Sprintf("group %s: the standby now holds run %s", j.Group.Name, last.RunID)}
	default:
		if err == nil {
			log.Info("group sync done", "status", last.Status, "run", last.RunID, "files", last.Files, "bytes", last.Bytes, "seconds", last.Seconds)
		}
		return
	}
	e.Kind, e.Group, e.Owner, e.Time = "group.sync", j.Group.Name, j.Owner, time.Now().UTC()
	if j.Notifier != nil {
		if nerr := j.Notifier.Notify(context.WithoutCancel(ctx), e); nerr != nil {
			log.Error("notification failed", "err", nerr)
		}
	}
}

func (d *Daemon) groupLoop(ctx context.Context, i int) {
	d.mu.Lock()
	j := d.Groups[i]
	d.mu.Unlock()
	for {
		if j.Reopen != nil {
			if g, err := j.Reopen(ctx); err != nil {
				d.Log.Error("reopen the group", "group", j.Group.Name, "err", err)
			} else {
				d.mu.Lock()
				j.Group, d.Groups[i].Group = g, g
				d.mu.Unlock()
			}
		}
		d.groupRound(ctx, j)
		d.mu.Lock()
		d.started["group/"+j.Group.Name] = true
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(j.Interval):
		}
	}
}
