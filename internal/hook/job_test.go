package hook_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/hook"
	"tandem/internal/integration"
)

const token = "tok-3f9a1c"

func instance(t *testing.T) *integration.Instance {
	t.Helper()
	in, err := integration.Start("east", token, integration.NewStore(),
		integration.Integration{ID: "ORDERS_SYNC", Version: "01.00.0000", Pattern: "SCHEDULED", Status: "ACTIVATED"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return in
}

func export(in *integration.Instance) config.Action {
	return config.Action{HTTP: &config.HTTPAction{Method: "POST",
		URL:     config.Secret(in.URL + "/ic/api/common/v1/exportServiceInstanceArchive"),
		Headers: map[string]config.Secret{"Authorization": "Bearer " + token},
		Body:    `{"jobName": "pod1", "overwrite": true}`, Expect: 202,
		Job: &config.JobPoll{Interval: config.Duration(20 * time.Millisecond), Timeout: config.Duration(5 * time.Second)}}}
}

func TestJobFollowsLocation(t *testing.T) {
	in := instance(t)
	var log bytes.Buffer
	out, err := hook.RunOutput(context.Background(), export(in), hook.Data{}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if st, _ := hook.Field(out["json"], "status"); st != "COMPLETED" {
		t.Fatalf("final answer %v", out)
	}
	if id, _ := hook.Field(out["start"].(hook.Output)["json"], "jobId"); id != "101" {
		t.Fatalf("start answer %v", out["start"])
	}
	for _, want := range []string{"202 Accepted", "job state IN_PROGRESS", "job state COMPLETED"} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), token) {
		t.Fatal("the token printed")
	}

	// An import answers no Location: the status URL is a template over
	// the start's answer, and the archive's name comes from the export.
	imp := export(in)
	imp.HTTP.URL = config.Secret(in.URL + "/ic/api/common/v1/importServiceInstanceArchive")
	imp.HTTP.Body = `{"archiveFile": "{{.Steps.export.json.archiveFile}}", "importActivateMode": "importOnly"}`
	imp.HTTP.Job.StatusURL = config.Secret(in.URL + "/ic/api/common/v1/importServiceInstanceArchive/{{.Response.json.jobId}}")
	if _, err := hook.RunOutput(context.Background(), imp, hook.Data{Steps: map[string]hook.Output{"export": out}}, &log); err != nil {
		t.Fatalf("import: %v", err)
	}
	imp.HTTP.Job.StatusURL = ""
	if _, err := hook.RunOutput(context.Background(), imp, hook.Data{Steps: map[string]hook.Output{"export": out}}, &log); err == nil || !strings.Contains(err.Error(), "no Location header") {
		t.Fatalf("import without status_url: %v", err)
	}
}

func TestJobFailures(t *testing.T) {
	for _, c := range []struct {
		fault integration.Fault
		want  string
	}{
		{integration.FailJob, "the job ended FAILED"},
		{integration.Never, "did not finish (last state IN_PROGRESS"},
		{integration.Garbage, "without a state at \"status\""},
		{integration.Refuse, "500 Internal Server Error: {\"title\":\"Error communicating"},
		{integration.Busy, ""},
	} {
		t.Run(string(c.fault), func(t *testing.T) {
			in := instance(t)
			in.SetFault("export", c.fault)
			a := export(in)
			if c.fault == integration.Never {
				a.HTTP.Job.Timeout = config.Duration(300 * time.Millisecond)
			}
			var log bytes.Buffer
			_, err := hook.RunOutput(context.Background(), a, hook.Data{}, &log)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("%v\n%s", err, log.String())
			case c.want == "" && !strings.Contains(log.String(), "409 Conflict"):
				t.Fatalf("the 409 was not waited out:\n%s", log.String())
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want %q\n%s", err, c.want, log.String())
			case err != nil && strings.Contains(err.Error(), token):
				t.Fatal("the token printed")
			}
		})
	}
	// A 409 that never clears ends at the timeout, saying so.
	in := instance(t)
	in.SetFault("export", integration.Never)
	a := export(in)
	// Long enough for a loaded machine to answer once.
	a.HTTP.Job.Timeout = config.Duration(time.Second)
	hook.RunOutput(context.Background(), a, hook.Data{}, &bytes.Buffer{}) // leaves a job running
	in.SetFault("export", integration.Healthy)
	if _, err := hook.RunOutput(context.Background(), a, hook.Data{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "still answered 409") {
		t.Fatalf("409 for good: %v", err)
	}
}

func TestTemplatesSeeOutputs(t *testing.T) {
	a := config.Action{Script: &config.ScriptAction{Command: []string{"sh", "-c", `echo '{{json .Steps.read.json.parameters}}'`}}}
	d := hook.Data{Steps: map[string]hook.Output{"read": {"json": map[string]any{"parameters": map[string]any{"lastRun": "2026-12-01T10:00:00Z"}}}}}
	out, err := hook.RunOutput(context.Background(), a, d, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := hook.Field(out["json"], "lastRun"); v != "2026-12-01T10:00:00Z" {
		t.Fatalf("output %v", out)
	}
}
