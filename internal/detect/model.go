package detect

import (
	"strconv"
	"strings"
)

// Model describes a model the workers serve, as they announce it: what the
// API checks a request's classes against, and what GET /models lists.
type Model struct {
	Name    string   `json:"name"`    // the model file's base name, e.g. "yolov8n"
	Classes []string `json:"classes"` // class names by id
	Input   Size     `json:"input"`   // the input the images are letterboxed to
}

// ServedModel is a model as GET /models lists it: with how many workers
// announced it within the last three announce intervals.
type ServedModel struct {
	Model
	Workers int `json:"workers"`
}

// ClassMask resolves a request's classes, ids or names (matched without
// regard to case), to a mask over names, the model's class names by id; nil
// for no classes (all kept). It returns an EINVALID *Error naming an id
// out of range or a name the model does not have.
func ClassMask(names, classes []string) ([]bool, error) {
	if len(classes) == 0 {
		return nil, nil
	}
	keep := make([]bool, len(names))
	for _, c := range classes {
		if id, err := strconv.Atoi(c); err == nil {
			if id < 0 || id >= len(names) {
				return nil, Errorf(EINVALID, "Class id %d is out of range; the model has classes 0 to %d.", id, len(names)-1)
			}
			keep[id] = true
			continue
		}
		found := false
		for id, n := range names {
			if strings.EqualFold(n, c) {
				keep[id], found = true, true
			}
		}
		if !found {
			return nil, Errorf(EINVALID, "The model has no class named %q.", strings.ToValidUTF8(c, "?"))
		}
	}
	return keep, nil
}

// CheckClasses says whether a task asking for classes can succeed on one of
// models, the models the workers serve. It returns nil when one of them
// has every class, or when models is empty (no worker has said what it
// serves: the worker that takes the task checks). Otherwise a worker
// would fail the task, and it returns an EINVALID *Error that says why
// for each model.
func CheckClasses(classes []string, models []ServedModel) error {
	if len(classes) == 0 || len(models) == 0 {
		return nil
	}
	var why []string
	var first error
	for _, m := range models {
		_, err := ClassMask(m.Classes, classes)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
		why = append(why, m.Name+": "+ErrorMessage(err))
	}
	if len(models) == 1 {
		return Errorf(EINVALID, "%s GET /models lists its classes.", ErrorMessage(first))
	}
	return Errorf(EINVALID, "No model the workers serve has every class asked for. %s GET /models lists their classes.", strings.Join(why, " "))
}
