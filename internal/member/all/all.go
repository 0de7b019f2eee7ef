// Package all registers every member kind: import it for its side effect
// where configurations are loaded (cmd/tandem, tests).
package all

import (
	_ "tandem/internal/member/alias"
	_ "tandem/internal/member/bucket"
	_ "tandem/internal/member/cdcpair"
	_ "tandem/internal/member/database"
	_ "tandem/internal/member/endpoint"
	_ "tandem/internal/member/group"
	_ "tandem/internal/member/streams"
	_ "tandem/internal/member/syncjob"
	_ "tandem/internal/member/workflow"
)
