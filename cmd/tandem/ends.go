package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"tandem/internal/location"
	"tandem/internal/objstore"
	s3store "tandem/internal/objstore/s3"
)

// endsFlags say how a one-shot command reaches SRC and DST on S3.
type endsFlags struct {
	endpoint, fromEndpoint, toEndpoint, region string
	pathStyle                                  bool
}

func (f *endsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoint, "endpoint", "", "S3 endpoint for both sides (default AWS)")
	fs.StringVar(&f.fromEndpoint, "from-endpoint", "", "S3 endpoint of SRC")
	fs.StringVar(&f.toEndpoint, "to-endpoint", "", "S3 endpoint of DST")
	fs.StringVar(&f.region, "region", "", "S3 region")
	fs.BoolVar(&f.pathStyle, "path-style", false, "S3 path-style addressing")
}

func (f endsFlags) options(ep string) s3store.Options {
	if ep == "" {
		ep = f.endpoint
	}
	return s3store.Options{Endpoint: ep, Region: f.region, PathStyle: f.pathStyle}
}

// ends is an opened SRC and DST.
type ends struct {
	src, dst         objstore.Bucket
	srcLoc, dstLoc   location.Location
	srcOpts, dstOpts s3store.Options
}

// openEnds parses, checks for overlap and opens SRC and DST, creating a
// missing destination folder; a dry run creates nothing and sees a missing
// folder as empty.
func openEnds(ctx context.Context, f endsFlags, srcURL, dstURL string, dryRun bool) (*ends, error) {
	e := &ends{srcOpts: f.options(f.fromEndpoint), dstOpts: f.options(f.toEndpoint)}
	for _, ep := range []string{e.srcOpts.Endpoint, e.dstOpts.Endpoint} {
		if err := s3store.CheckEndpoint(ep); err != nil {
			return nil, usageError{err}
		}
	}
	var err error
	if e.srcLoc, err = location.Parse(srcURL); err != nil {
		return nil, usageError{fmt.Errorf("SRC: %w", err)}
	}
	if e.dstLoc, err = location.Parse(dstURL); err != nil {
		return nil, usageError{fmt.Errorf("DST: %w", err)}
	}
	if location.Overlaps(e.srcLoc, e.srcOpts.Endpoint, e.dstLoc, e.dstOpts.Endpoint) {
		return nil, usageError{fmt.Errorf("SRC %s and DST %s overlap: a replica cannot be inside its source or hold it", e.srcLoc, e.dstLoc)}
	}
	if e.src, err = location.Open(ctx, e.srcLoc, e.srcOpts, false); err != nil {
		if errors.Is(err, objstore.ErrNotExist) {
			return nil, usageError{fmt.Errorf("SRC: %w", err)}
		}
		return nil, fmt.Errorf("SRC: %w", err)
	}
	if e.dst, err = location.Open(ctx, e.dstLoc, e.dstOpts, !dryRun); err != nil {
		if dryRun && e.dstLoc.Scheme == "file" && errors.Is(err, objstore.ErrNotExist) {
			e.dst = objstore.Empty(e.dstLoc.String()) // a real run creates it
			return e, nil
		}
		return nil, fmt.Errorf("DST: %w", err)
	}
	return e, nil
}
