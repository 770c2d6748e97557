package http

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
)

// spec is the part of the OpenAPI document the tests hold to the code.
type spec struct {
	Paths map[string]map[string]struct {
		Parameters []struct {
			Ref  string `json:"$ref"`
			Name string `json:"name"`
		} `json:"parameters"`
		Responses map[string]json.RawMessage `json:"responses"`
	} `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	var s spec
	if err := json.Unmarshal(openAPI, &s); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return s
}

// TestOpenAPIRoutes: the document has every route the API serves, with
// its method, and no other.
func TestOpenAPIRoutes(t *testing.T) {
	s := loadSpec(t)
	// The routes only: nothing here reaches Redis.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	q := asynq.NewQueue(rdb, asynq.QueueConfig{})
	defer q.Close()
	srv := NewServer(Config{Models: asynq.NewServedModels(rdb, "")}, q, nil)
	var served, documented []string
	chi.Walk(srv.router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served = append(served, strings.ToLower(method)+" "+strings.ReplaceAll(route, "{id}", "{task_id}"))
		return nil
	})
	for path, ops := range s.Paths {
		for method := range ops {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("routes (-served +documented):\n%s", diff)
	}
}

// TestOpenAPIParameters: POST /predict documents exactly the parameters
// the API reads (the detection's and wait), and GET /result wait.
func TestOpenAPIParameters(t *testing.T) {
	s := loadSpec(t)
	var read []string
	detect.ParseParams(func(name string) string {
		read = append(read, name)
		return ""
	})
	want := append(read, "wait")
	var got []string
	for _, p := range s.Paths["/predict"]["post"].Parameters {
		got = append(got, strings.TrimPrefix(p.Ref, "#/components/parameters/"))
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("POST /predict parameters (-read +documented):\n%s", diff)
	}
	got = nil
	for _, p := range s.Paths["/result/{task_id}"]["get"].Parameters {
		got = append(got, p.Name+strings.TrimPrefix(p.Ref, "#/components/parameters/"))
	}
	if diff := cmp.Diff([]string{"task_id", "wait"}, got); diff != "" {
		t.Errorf("GET /result parameters (-read +documented):\n%s", diff)
	}
}

// TestOpenAPISchemas: the documented result types have the JSON fields
// of the types the API answers with.
func TestOpenAPISchemas(t *testing.T) {
	s := loadSpec(t)
	for name, v := range map[string]any{
		"TaskInfo": detect.TaskInfo{}, "Result": detect.Result{}, "Detection": detect.Detection{}, "Model": detect.ServedModel{},
	} {
		var fields []string
		for _, f := range reflect.VisibleFields(reflect.TypeOf(v)) {
			if f.Anonymous { // its fields are the JSON object's, listed after it
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			fields = append(fields, tag)
		}
		var documented []string
		for p := range s.Components.Schemas[name].Properties {
			documented = append(documented, p)
		}
		slices.Sort(fields)
		slices.Sort(documented)
		if diff := cmp.Diff(fields, documented); diff != "" {
			t.Errorf("schema %s (-type +documented):\n%s", name, diff)
		}
	}
}

// TestOpenAPIStatuses: every status an error can take is documented for
// some route.
func TestOpenAPIStatuses(t *testing.T) {
	s := loadSpec(t)
	documented := map[string]bool{}
	for _, ops := range s.Paths {
		for _, op := range ops {
			for code := range op.Responses {
				documented[code] = true
			}
		}
	}
	for code, status := range codes {
		if status != http.StatusInternalServerError && !documented[strconv.Itoa(status)] {
			t.Errorf("%s answers %d, which no route documents", code, status)
		}
	}
}
