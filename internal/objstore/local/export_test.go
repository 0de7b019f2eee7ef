package local

// For the tests of package local_test.
var LockWait = &lockWait

const LockName = lockName

// HoldLocked holds a compare-and-swap up just before its rename.
func HoldLocked(f func()) { heldLocked = f }
