package hook

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"tandem/internal/config"
)

var data = Data{Plan: "failover", Execution: "x1", From: "east", To: "west", Region: "west", Vars: map[string]string{"job_id": "42"}}

func TestHTTP(t *testing.T) {
	var got struct{ method, path, auth, body string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.method, got.path, got.auth, got.body = r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)
		if strings.Contains(r.URL.Path, "broken") {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	a := config.Action{HTTP: &config.HTTPAction{
		URL:     config.Secret(srv.URL + "/api/2.1/jobs/update/{{.Region}}"),
		Headers: map[string]config.Secret{"Authorization": "Bearer s3cr3t"},
		Body:    `{"job_id": {{.Vars.job_id}}, "new_settings": {"schedule": {"pause_status": "UNPAUSED"}}}`,
	}}
	var log bytes.Buffer
	if err := Run(context.Background(), a, data, &log); err != nil {
		t.Fatal(err)
	}
	if got.method != "POST" || got.path != "/api/2.1/jobs/update/west" || got.auth != "Bearer s3cr3t" || !strings.Contains(got.body, `"job_id": 42`) {
		t.Fatalf("request %+v", got)
	}
	if !strings.Contains(log.String(), "200 OK") || !strings.Contains(log.String(), `{"ok":true}`) {
		t.Fatalf("log %q", log.String())
	}
	if err := Reachable(context.Background(), a, data); err != nil {
		t.Fatal(err)
	}

	a.HTTP.URL = config.Secret(srv.URL + "/broken/token-abc")
	err := Run(context.Background(), a, data, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "500") || strings.Contains(err.Error(), "token-abc") {
		t.Fatalf("error %v", err)
	}
	a.HTTP.URL = "http://127.0.0.1:1/token-abc"
	if err := Reachable(context.Background(), a, data); err == nil || strings.Contains(err.Error(), "token-abc") {
		t.Fatalf("unreachable: %v", err)
	}
	a.HTTP.Body = "{{.Vars.missing}}"
	if err := Run(context.Background(), a, data, io.Discard); err == nil || !strings.Contains(err.Error(), "body") {
		t.Fatalf("missing var: %v", err)
	}
}

func TestScript(t *testing.T) {
	var log bytes.Buffer
	a := config.Action{Script: &config.ScriptAction{
		Command: []string{"sh", "-c", `echo "moving $TANDEM_FROM to $TANDEM_TO as {{.Plan}} ($SECRET_LEN)"; exit ${CODE:-0}`},
		Env:     map[string]config.Secret{"SECRET_LEN": "7"},
	}}
	if err := Run(context.Background(), a, data, &log); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != "moving east to west as failover (7)\n" {
		t.Fatalf("output %q", got)
	}
	a.Script.Env["CODE"] = "3"
	if err := Run(context.Background(), a, data, io.Discard); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit 3: %v", err)
	}
	a.Script.Command = []string{"/no/such/program"}
	if err := Reachable(context.Background(), a, data); err == nil {
		t.Fatal("a missing program is reachable")
	}
}

func TestSQL(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "c.db")
	a := config.Action{SQL: &config.SQLAction{Driver: "sqlite", DSN: config.Secret(dsn), Statements: []string{
		`CREATE TABLE IF NOT EXISTS events (plan text, region text)`,
		`INSERT INTO events VALUES ('{{.Plan}}', '{{.Region}}')`,
	}}}
	var log bytes.Buffer
	if err := Run(context.Background(), a, data, &log); err != nil {
		t.Fatal(err)
	}
	if err := Reachable(context.Background(), a, data); err != nil {
		t.Fatal(err)
	}
	a.SQL.Statements = append(a.SQL.Statements, `INSERT INTO nowhere VALUES (1)`)
	if err := Run(context.Background(), a, data, io.Discard); err == nil || !strings.Contains(err.Error(), "statement 3") {
		t.Fatalf("bad statement: %v", err)
	}
}
