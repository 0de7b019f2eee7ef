// Package databricks reads a job's runs from the Databricks Jobs API 2.1
// (GET /api/2.1/jobs/runs/list), so that a table group's cut can follow the
// workflow that writes its tables without the workflow calling tandem.
package databricks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"tandem/internal/tablegroup"

	"tandem/internal/redact"
)

// Client lists the runs of one job.
type Client struct {
	Host  string // https://<workspace>
	Token string // a personal access token or OAuth token; never printed
	JobID int64
	// Pages bounds how many pages of 25 runs are read (default 4).
	Pages int
	HTTP  *http.Client
}

var _ tablegroup.RunSource = (*Client)(nil)

type runsPage struct {
	Runs []struct {
		RunID     int64 `json:"run_id"`
		StartTime int64 `json:"start_time"`
		EndTime   int64 `json:"end_time"`
		State     struct {
			LifeCycleState string `json:"life_cycle_state"`
			ResultState    string `json:"result_state"`
		} `json:"state"`
	} `json:"runs"`
	HasMore       bool   `json:"has_more"`
	NextPageToken string `json:"next_page_token"`
}

// Runs returns the job's recent runs, active ones included, newest first.
func (c *Client) Runs(ctx context.Context) ([]tablegroup.Run, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	pages := c.Pages
	if pages <= 0 {
		pages = 4
	}
	var out []tablegroup.Run
	token := ""
	for range pages {
		q := url.Values{"job_id": {strconv.FormatInt(c.JobID, 10)}, "limit": {"25"}}
		if token != "" {
			q.Set("page_token", token)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Host, "/")+"/api/2.1/jobs/runs/list?"+q.Encode(), nil)
		if err != nil {
			return nil, fmt.Errorf("databricks %s: %w", redact.Host(c.Host), redact.Err(err))
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("databricks %s: %w", redact.Host(c.Host), redact.Err(err))
		}
		var page runsPage
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			err = fmt.Errorf("databricks %s refused the token (%s): check workflow.databricks.token", c.Host, resp.Status)
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("databricks %s: runs/list for job %d answered %s", c.Host, c.JobID, resp.Status)
		default:
			if derr := json.NewDecoder(resp.Body).Decode(&page); derr != nil {
				err = fmt.Errorf("databricks %s: runs/list answer: %w", c.Host, derr)
			}
		}
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		for _, r := range page.Runs {
			run := tablegroup.Run{ID: strconv.FormatInt(r.RunID, 10), Start: time.UnixMilli(r.StartTime), Status: "running"}
			if r.EndTime > 0 {
				run.End = time.UnixMilli(r.EndTime)
			}
			if r.State.LifeCycleState == "TERMINATED" || r.State.LifeCycleState == "INTERNAL_ERROR" || r.State.LifeCycleState == "SKIPPED" {
				run.Status = "failed"
				if r.State.ResultState == "SUCCESS" {
					run.Status = "success"
				}
				if run.End.IsZero() {
					run.End = run.Start
				}
			} else {
				run.End = time.Time{} // still going
			}
			out = append(out, run)
		}
		if !page.HasMore || page.NextPageToken == "" {
			break
		}
		token = page.NextPageToken
	}
	return out, nil
}
