package replicate

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the replication metrics `tandem serve` exports.
type Metrics struct {
	bytes, objects, deleted, failed *prometheus.CounterVec
	passes                          *prometheus.CounterVec
	passSeconds, foreign, pending   *prometheus.GaugeVec
	watermark                       *prometheus.GaugeVec

	mu         sync.Mutex
	watermarks map[string]time.Time
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{watermarks: map[string]time.Time{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "replication", Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "replication", Name: name, Help: help}, []string{"pair"})
		reg.MustRegister(v)
		return v
	}
	m.bytes = counter("bytes_copied_total", "Bytes copied to the target.", "pair")
	m.objects = counter("objects_copied_total", "Objects copied to the target.", "pair")
	m.deleted = counter("objects_deleted_total", "Objects deleted from the target.", "pair")
	m.failed = counter("object_failures_total", "Objects whose copy failed in a pass.", "pair")
	m.passes = counter("passes_total", "Replication passes, by result (ok, partial, error).", "pair", "result")
	m.passSeconds = gauge("last_pass_seconds", "Duration of the last pass.")
	m.foreign = gauge("foreign_objects", "Objects in the target that did not come from the source, at the last pass.")
	m.pending = gauge("pending_objects", "Objects that failed or wait in the retry queue, at the last pass.")
	m.watermark = gauge("watermark_timestamp_seconds", "RPO watermark: every change in the source before this time is in the target.")
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "tandem", Subsystem: "replication", Name: "max_lag_seconds",
		Help: "Largest age of any pair's watermark: the worst current RPO.",
	}, m.maxLag))
	reg.MustRegister(&lagCollector{m: m, desc: prometheus.NewDesc("tandem_replication_lag_seconds",
		"Age of the pair's watermark: how much data a failover now would lose, at most.", []string{"pair"}, nil)})
	return m
}

// Observe records a finished pass.
func (m *Metrics) Observe(s Summary, err error) {
	pair := s.Pair
	m.bytes.WithLabelValues(pair).Add(float64(s.Bytes))
	m.objects.WithLabelValues(pair).Add(float64(s.Objects))
	m.deleted.WithLabelValues(pair).Add(float64(s.Deleted))
	m.failed.WithLabelValues(pair).Add(float64(s.Failed))
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case s.Failed+s.Pending > 0:
		result = "partial"
	}
	m.passes.WithLabelValues(pair, result).Inc()
	m.passSeconds.WithLabelValues(pair).Set(s.Seconds)
	m.foreign.WithLabelValues(pair).Set(float64(s.Foreign))
	m.pending.WithLabelValues(pair).Set(float64(s.Failed + s.Pending))
	if s.Watermark != nil {
		m.SetWatermark(pair, *s.Watermark)
	}
}

// SetWatermark records a pair's watermark (also at start, from state).
func (m *Metrics) SetWatermark(pair string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.After(m.watermarks[pair]) {
		m.watermarks[pair] = t
		m.watermark.WithLabelValues(pair).Set(float64(t.UnixNano()) / 1e9)
	}
}

func (m *Metrics) maxLag() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	worst := 0.0
	for _, t := range m.watermarks {
		worst = max(worst, time.Since(t).Seconds())
	}
	return worst
}

// lagCollector computes each pair's lag at scrape time.
type lagCollector struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for pair, t := range c.m.watermarks {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, time.Since(t).Seconds(), pair)
	}
}
