package local

// For the tests of package local_test.
var LockWait = &lockWait

const LockName = lockName
