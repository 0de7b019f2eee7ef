package s3

// HoldBeforeSend makes every presigned request wait f() before it is sent,
// as a paused process would; nil ends it.
func HoldBeforeSend(f func()) { beforeSend = f }
