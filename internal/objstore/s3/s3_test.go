package s3_test

import (
	"context"
	"testing"

	"tandem/internal/objstore"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/objstore/storetest"
)

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	storetest.Run(t, func(t *testing.T) objstore.Bucket {
		b, err := s3store.Open(context.Background(), srv.NewBucket(t), "some/prefix", srv.Options())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
