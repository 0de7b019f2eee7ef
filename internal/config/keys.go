package config

import (
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// keys walks a decoded YAML document against the type it decodes into,
// before decoding: every key the type does not have is an error with its
// path, its line and the nearest known key, and the line of every path is
// kept, so that later errors (a value that does not parse, a failed
// validation) can name both.
type keys struct {
	// dir is the folder of the file: relative paths in fields tagged
	// `tandem:"path"` are made relative to it ("" leaves them alone).
	dir    string
	errs   []error
	lines  map[string]int    // path -> line of its key (or value)
	values map[[2]int]string // line, column of a scalar value -> its path
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (k *keys) walk(n *yaml.Node, t reflect.Type, path string) {
	if n == nil {
		return
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			k.walk(c, t, path)
		}
		return
	}
	if path != "" {
		if _, ok := k.lines[path]; !ok {
			k.lines[path] = n.Line
		}
		if n.Kind == yaml.ScalarNode {
			k.values[[2]int{n.Line, n.Column}] = path
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.StructField{}
		structFields(t, fields)
		var known []string
		for name := range fields {
			known = append(known, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := join(path, key.Value)
			f, ok := fields[key.Value]
			if !ok {
				k.errs = append(k.errs, placed{fmt.Errorf("line %d: %s: unknown key%s", key.Line, p, suggest(key.Value, known))})
				continue
			}
			k.lines[p] = key.Line
			if f.Tag.Get("tandem") == "path" {
				k.resolve(val)
			}
			k.walk(val, f.Type, p)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			k.lines[p] = n.Content[i].Line
			k.walk(n.Content[i+1], t.Elem(), p)
		}
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, c := range n.Content {
			k.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// structFields collects the YAML keys of struct type t, inline fields
// included.
func structFields(t reflect.Type, out map[string]reflect.StructField) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
		case strings.Contains(opts, "inline"):
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				structFields(ft, out)
			}
		case name == "":
			out[strings.ToLower(f.Name)] = f
		default:
			out[name] = f
		}
	}
}

// resolve makes a relative folder path in n relative to the file's
// folder, as people expect of a configuration file (a URL or an absolute
// path stays as it is).
func (k *keys) resolve(n *yaml.Node) {
	if k.dir == "" || n.Kind != yaml.ScalarNode || n.Value == "" || strings.Contains(n.Value, "://") || filepath.IsAbs(n.Value) {
		return
	}
	n.Value = filepath.Join(k.dir, n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// lineOf is the line of field (a path as Check.Bad takes it), or of the
// nearest enclosing path the file has; 0 when none is known.
func (c *Config) lineOf(field string) int {
	for p := field; p != ""; {
		if l, ok := c.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// placed is an error that already names its line and path.
type placed struct{ error }

var lineRe = regexp.MustCompile(`^line (\d+)(?: column (\d+))?: `)

// withPath adds the path of the value a decoding error is about ("line N
// column C: msg", as Duration and Size report; or "line N: msg", when one
// value starts on that line).
func (c *Config) withPath(msg string) string {
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(m[1])
	path := ""
	if m[2] != "" {
		col, _ := strconv.Atoi(m[2])
		path = c.values[[2]int{line, col}]
	} else {
		for at, p := range c.values {
			if at[0] == line {
				if path != "" {
					path = ""
					break
				}
				path = p
			}
		}
	}
	if path == "" {
		return fmt.Sprintf("line %d: %s", line, msg[len(m[0]):])
	}
	return fmt.Sprintf("line %d: %s: %s", line, path, msg[len(m[0]):])
}
