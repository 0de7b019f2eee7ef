package bucket

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/location"
	"tandem/internal/replicate"
)

// Replication keeps a target bucket equal to a source bucket (the file's
// replication[] section).
type Replication struct {
	Name string `yaml:"name" json:"name"`
	From Side   `yaml:"from" json:"from"`
	To   Side   `yaml:"to" json:"to"`
	// Interval between passes under `tandem serve` (default 1m).
	Interval config.Duration `yaml:"interval" json:"interval"`
	// Delete removes target objects that tandem copied and the source no
	// longer has.
	Delete  bool     `yaml:"delete" json:"delete"`
	Exclude []string `yaml:"exclude" json:"exclude,omitempty"`
	// Transfers is the number of objects copied at once (default 16).
	Transfers          int             `yaml:"transfers" json:"transfers"`
	Retries            int             `yaml:"retries" json:"retries"`
	RetryBackoff       config.Duration `yaml:"retry_backoff" json:"retry_backoff"`
	MultipartThreshold config.Size     `yaml:"multipart_threshold" json:"multipart_threshold"`
	PartSize           config.Size     `yaml:"part_size" json:"part_size"`
	// RPO is the most the watermark may lag before status calls the pair
	// late (default 15m).
	RPO config.Duration `yaml:"rpo" json:"rpo"`
	// FileMode is the permission bits of every file written into a
	// folder target; unset, each keeps its source file's bits less the
	// group and other write bits.
	FileMode config.FileMode `yaml:"file_mode" json:"file_mode,omitempty"`
	// IgnoreUnsupported lets a pass that passed over symbolic links and
	// special files in the source still claim its watermark.
	IgnoreUnsupported bool `yaml:"ignore_unsupported" json:"ignore_unsupported,omitempty"`
	// ReadOnlyPrincipal, for an S3 target, is the ARN tandem's
	// credentials act as: the bucket policy then denies object writes
	// under the target to every other principal until it is promoted.
	ReadOnlyPrincipal string `yaml:"read_only_principal" json:"read_only_principal,omitempty"`
}

// MemberName is its name.
func (r Replication) MemberName() string { return r.Name }

// Side is one end of a replication.
type Side struct {
	Region string `yaml:"region" json:"region"`
	URL    string `yaml:"url" json:"url" tandem:"path"`
}

const (
	sectionKey = "replication"
	refKey     = "replications"
)

// Replications returns the configured replications.
func Replications(c *config.Config) []Replication { return config.Get[[]Replication](c, sectionKey) }

// Find finds a replication by name or by target URL.
func Find(c *config.Config, nameOrURL string) (*Replication, error) {
	if r := config.Find[Replication](c, sectionKey, nameOrURL); r != nil {
		return r, nil
	}
	all := Replications(c)
	for i := range all {
		r := &all[i]
		if r.To.URL == nameOrURL {
			return r, nil
		}
		if a, err := location.Parse(r.To.URL); err == nil {
			if b, err := location.Parse(nameOrURL); err == nil && a == b {
				return r, nil
			}
		}
	}
	var known []string
	for _, r := range all {
		known = append(known, r.Name)
	}
	return nil, fmt.Errorf("no replication named %q or with that target in %s (known: %s)", nameOrURL, c.Path(), strings.Join(known, ", "))
}

// Exclusions are the key prefixes a replication leaves alone: its own
// exclude list and every location another member copies as a unit of its
// own (a group's tables) inside its source or target, in either direction.
func Exclusions(c *config.Config, r *Replication) []string {
	out := slices.Clone(r.Exclude)
	endpoint := func(region string) string {
		if reg := c.Region(region); reg != nil {
			return reg.S3.Endpoint
		}
		return ""
	}
	for _, o := range c.Owned() {
		in, err := location.Parse(o.URL)
		if err != nil {
			continue
		}
		for _, side := range []Side{r.From, r.To} {
			outer, err := location.Parse(side.URL)
			if err != nil || endpoint(side.Region) != endpoint(o.Region) {
				continue
			}
			if rel, ok := location.Rel(outer, in); ok && !slices.Contains(out, rel) {
				out = append(out, rel)
			}
		}
	}
	return out
}

// section is the kind's configuration section.
func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "replication",
		New: func() any { return new([]Replication) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Replication) {
				defaults(&(*v.(*[]Replication))[i])
			}
		},
		Validate: func(ck *config.Check, v any) { validate(ck, *v.(*[]Replication)) },
		Names:    config.NamesOf[Replication],
		Locations: func(c *config.Config, name string) []config.Owned {
			r, err := Find(c, name)
			if err != nil {
				return nil
			}
			return []config.Owned{{Region: r.From.Region, URL: r.From.URL}, {Region: r.To.Region, URL: r.To.URL}}
		},
	}
}

func defaults(r *Replication) {
	if r.Interval == 0 {
		r.Interval = config.Duration(time.Minute)
	}
	if r.Transfers == 0 {
		r.Transfers = 16
	}
	if r.Retries == 0 {
		r.Retries = 3
	}
	if r.RetryBackoff == 0 {
		r.RetryBackoff = config.Duration(30 * time.Second)
	}
	if r.MultipartThreshold == 0 {
		r.MultipartThreshold = 64 << 20
	}
	if r.PartSize == 0 {
		r.PartSize = 16 << 20
	}
	if r.RPO == 0 {
		r.RPO = config.Duration(15 * time.Minute)
	}
}

func validate(ck *config.Check, all []Replication) {
	names := map[string]bool{}
	for i := range all {
		r := &all[i]
		f := fmt.Sprintf("%s[%d]", sectionKey, i)
		ck.Name(f+".name", "replication", r.Name, names)
		var locs [2]*location.Location
		for j, side := range []struct {
			name string
			s    Side
		}{{"from", r.From}, {"to", r.To}} {
			sf := f + "." + side.name
			ck.Region(sf+".region", side.s.Region)
			if l, ok := ck.Location(sf+".url", side.s.URL); ok {
				locs[j] = &l
			}
		}
		if locs[0] != nil && locs[1] != nil {
			ep := []string{ck.Endpoint(r.From.Region), ck.Endpoint(r.To.Region)}
			if location.Overlaps(*locs[0], ep[0], *locs[1], ep[1]) {
				ck.Bad(f, "from %s and to %s overlap: a replica cannot be inside its source or hold it", locs[0], locs[1])
			}
			for _, s := range ck.States() {
				for j, l := range locs {
					if location.Overlaps(s.Loc, s.Endpoint, *l, ep[j]) && !excludes(r.Exclude, *l, s.Loc) {
						ck.Bad(f+"."+[]string{"from", "to"}[j]+".url", "%s overlaps %s (%s): keep tandem's records outside replicated locations", l, s.Field, s.Loc)
					}
				}
			}
			ck.Target(f+".to.url", f, *locs[1], r.To.Region, false)
			if r.ReadOnlyPrincipal != "" && locs[1].Scheme != "s3" {
				ck.Bad(f+".read_only_principal", "applies to S3 targets only (a folder replica is kept read-only by its file modes): remove it")
			}
		}
		if r.Transfers < 1 || r.Transfers > 1024 {
			ck.Bad(f+".transfers", "%d is out of range (1 to 1024)", r.Transfers)
		}
		if r.Retries < 1 {
			ck.Bad(f+".retries", "%d is out of range (at least 1)", r.Retries)
		}
		if r.PartSize < 5<<20 || r.PartSize > 5<<30 {
			ck.Bad(f+".part_size", "%d bytes is outside S3's part sizes (5MiB to 5GiB)", r.PartSize)
		}
		if p := r.ReadOnlyPrincipal; p != "" && !strings.HasPrefix(p, "arn:") {
			ck.Bad(f+".read_only_principal", "%q is not an ARN: give the ARN of the role or user tandem's credentials act as, such as arn:aws:iam::123456789012:role/tandem", p)
		}
		if r.FileMode != 0 {
			if err := replicate.CheckMode(fs.FileMode(r.FileMode)); err != nil {
				ck.Bad(f+".file_mode", "%v", err)
			}
		}
		if time.Duration(r.Interval) < time.Second {
			ck.Bad(f+".interval", "%s is too short (at least 1s)", time.Duration(r.Interval))
		}
		for j, x := range r.Exclude {
			if x == "" || strings.HasPrefix(x, "/") {
				ck.Bad(fmt.Sprintf("%s.exclude[%d]", f, j), "%q must be a non-empty key prefix relative to the url", x)
			}
		}
	}
}

// excludes reports whether state sits inside loc under an excluded prefix.
func excludes(exclude []string, loc, st location.Location) bool {
	rel, ok := location.Rel(loc, st)
	return ok && slices.ContainsFunc(exclude, func(x string) bool { return strings.HasPrefix(rel, x) })
}
