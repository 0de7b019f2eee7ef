package member

import (
	"context"
	"fmt"
	"strings"
	"time"

	"tandem/internal/alert"
	"tandem/internal/daemon"
)

// AlertMembers adds, for every protection group of region with a notify
// setting, a task that alerts while one of its members needs a person
// (a pair or group late past its RPO, failing, foreign writes, ...) and
// tells when it is back to normal. One region alerts: the one the lease
// names as standby (the members' records are in it, and it is the one
// alive when the primary is not), or the holder when there is no standby.
func (s *Serving) AlertMembers(region string) {
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		al := alert.New(pg, s.Env.Log)
		if al == nil || (region != pg.Primary && region != pg.Standby) {
			continue
		}
		interval := min(30*time.Second, max(time.Second, time.Duration(pg.LeaseTTL)))
		s.Task(daemon.Task{Name: "alerts/" + pg.Name, Interval: interval, NotReady: true, Run: func(ctx context.Context) time.Duration {
			rec, ok, err := s.Env.Lease(ctx, pg.Name)
			if err != nil || !ok {
				return 0
			}
			if teller := rec.Standby; teller != region && (teller != "" || rec.Holder != region) {
				return 0
			}
			for _, k := range Kinds() {
				for _, m := range pg.Members(k.Section().Ref) {
					rep := k.Status(Reading(ctx), s.Env, m)
					key := k.Name() + "/" + m
					noun := k.Section().Noun + " " + m
					if rep.Attention {
						al.Raise(ctx, key, k.Section().Noun, fmt.Sprintf("%s: %s: %s", noun, rep.Health, strings.Join(rep.Lines, "; ")), map[string]any{"member": m, "health": rep.Health})
					} else {
						al.Resolve(ctx, key, fmt.Sprintf("%s: %s again", noun, rep.Health))
					}
				}
			}
			return 0
		}})
	}
}
