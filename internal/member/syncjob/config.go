// Package syncjob is the member kind of sync jobs (sync_jobs[] in the
// configuration and in protection groups): work that keeps a standby
// current where no copy of bytes can, such as an integration platform's
// design-time metadata (export from the primary, import into the
// standby, each an asynchronous job) or values read from the primary and
// written to the standby (schedule parameters). A job is a sequence of
// HTTP, asynchronous-job, SQL or script actions, each acting in the
// primary or the standby, whose outputs feed later ones through templates
// ({{.Steps.export.json.jobId}}).
//
// The lease holder's serve runs each job every interval; every attempt is
// recorded in the standby's state, and the age of the last good one is the
// job's RPO (status, alerts, metrics, max_lag of automatic failover). A
// switchover runs a last one before the lease moves. Every action is
// checked against the lease just before it starts (the actions reach
// systems tandem cannot gate), and its templates see the epoch (.Epoch).
package syncjob

import (
	"fmt"
	"time"

	"tandem/internal/config"
)

// Job is one sync job.
type Job struct {
	Name string `yaml:"name" json:"name"`
	// Every is how often the lease holder's serve runs it (default 15m).
	Every config.Duration `yaml:"every" json:"every"`
	// MaxAge is the RPO: the last good sync older than this makes the job
	// late (default three times every).
	MaxAge config.Duration `yaml:"max_age" json:"max_age"`
	// Timeout bounds one attempt (default 30m).
	Timeout config.Duration `yaml:"timeout" json:"timeout"`
	// RetryWait is how long after a failed attempt the next one starts
	// (default the smaller of every and 1m).
	RetryWait config.Duration `yaml:"retry_wait" json:"retry_wait"`
	// Vars per region, for the templates (.Vars.host).
	Vars  map[string]map[string]string `yaml:"vars" json:"vars,omitempty"`
	Steps []Step                       `yaml:"steps" json:"steps"`
}

// Step is one action of a job.
type Step struct {
	Name string `yaml:"name" json:"name"`
	// In is the region the action acts in: primary or standby. Its
	// templates see that region's vars and name (.Region).
	In            string `yaml:"in" json:"in"`
	config.Action `yaml:",inline"`
}

const (
	sectionKey = "sync_jobs"
	refKey     = "sync_jobs"
)

// All returns the configured jobs.
func All(c *config.Config) []Job { return config.Get[[]Job](c, sectionKey) }

// Find returns the named job, or nil.
func Find(c *config.Config, name string) *Job { return config.Find[Job](c, sectionKey, name) }

// MemberName is its name.
func (j Job) MemberName() string { return j.Name }

func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "sync job",
		New: func() any { return new([]Job) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Job) {
				j := &(*v.(*[]Job))[i]
				if j.Every == 0 {
					j.Every = config.Duration(15 * time.Minute)
				}
				if j.MaxAge == 0 {
					j.MaxAge = 3 * j.Every
				}
				if j.Timeout == 0 {
					j.Timeout = config.Duration(30 * time.Minute)
				}
				if j.RetryWait == 0 {
					j.RetryWait = min(j.Every, config.Duration(time.Minute))
				}
			}
		},
		Validate: func(ck *config.Check, v any) {
			seen := map[string]bool{}
			for i, j := range *v.(*[]Job) {
				f := fmt.Sprintf("%s[%d]", sectionKey, i)
				ck.Name(f+".name", "sync job", j.Name, seen)
				if time.Duration(j.Every) < 100*time.Millisecond {
					ck.Bad(f+".every", "%s is too short (at least 100ms)", time.Duration(j.Every))
				}
				if j.MaxAge < j.Every {
					ck.Bad(f+".max_age", "%s is shorter than every (%s): the job would always be late", time.Duration(j.MaxAge), time.Duration(j.Every))
				}
				if time.Duration(j.Timeout) < time.Second {
					ck.Bad(f+".timeout", "%s is too short (at least 1s)", time.Duration(j.Timeout))
				}
				if len(j.Steps) == 0 {
					ck.Bad(f+".steps", "required: the actions of one sync")
				}
				names := map[string]bool{}
				for k, s := range j.Steps {
					sf := fmt.Sprintf("%s.steps[%d]", f, k)
					ck.Name(sf+".name", "step", s.Name, names)
					if s.In != "primary" && s.In != "standby" {
						ck.Bad(sf+".in", "%q is not primary or standby: the region the action acts in", s.In)
					}
					ck.Action(sf, s.Action, false)
				}
				for r := range j.Vars {
					ck.Region(f+".vars."+r, r)
				}
			}
		},
		Names: config.NamesOf[Job],
	}
}
