// Package yamldocs cuts a file of YAML documents at its "---" (and "...") lines, keeping each document's line
// offset in the file so that problems can name a line, and reads a directory of such files. The policy and
// routes packages read the same files.
package yamldocs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Doc is one YAML document of a file.
type Doc struct {
	Index     int // 1-based, among non-empty documents
	FirstLine int // file line of Text's first line
	Text      string
}

// Split cuts data into its non-empty documents (a document of comments only is empty). A byte order mark is
// dropped.
func Split(data []byte) []Doc {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	lines := strings.Split(string(data), "\n")
	var docs []Doc
	start := 0
	flush := func(end int) {
		if hasContent(lines[start:end]) {
			docs = append(docs, Doc{Index: len(docs) + 1, FirstLine: start + 1, Text: strings.Join(lines[start:end], "\n")})
		}
	}
	for i, l := range lines {
		if isDocumentMarker(l) {
			flush(i)
			start = i + 1
		}
	}
	flush(len(lines))
	return docs
}

func isDocumentMarker(l string) bool {
	l = strings.TrimRight(l, " \t\r")
	if l == "---" || l == "..." {
		return true
	}
	return strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "---\t")
}

func hasContent(lines []string) bool {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t != "" && t[0] != '#' {
			return true
		}
	}
	return false
}

// Source is where a resource, a problem or a warning comes from.
type Source struct {
	File string `json:"file,omitempty"` // the file's name (a path for a directory's files)
	Doc  int    `json:"doc,omitempty"`  // 1-based index of the YAML document in the file
	Line int    `json:"line,omitempty"` // 1-based line in the file; 0 when unknown
}

func (s Source) String() string {
	loc := s.File
	if loc == "" {
		loc = "<input>"
	}
	if s.Line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, s.Line)
	}
	if s.Doc > 0 {
		loc = fmt.Sprintf("%s (document %d)", loc, s.Doc)
	}
	return loc
}

// File is one YAML file of a directory, read whole.
type File struct {
	Path string
	Data []byte
}

// FileProblem is a file of the directory that could not be read.
type FileProblem struct {
	Path string
	Msg  string
	Err  error
}

// ReadDir reads every *.yaml and *.yml file directly in dir (not in subdirectories; hidden files and anything
// not a regular file, after symlinks, are skipped), in name order. A file larger than maxSize is a problem, not
// read. The error is for dir itself.
func ReadDir(dir string, maxSize int64) ([]File, []FileProblem, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var files []File
	var problems []FileProblem
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		path := filepath.Join(dir, name)
		info, err := os.Stat(path) // follows symlinks, as ConfigMap mounts use them
		if err != nil {
			problems = append(problems, FileProblem{Path: path, Msg: "cannot read: " + pathError(err), Err: err})
			continue
		}
		if !info.Mode().IsRegular() {
			continue
		}
		if info.Size() > maxSize {
			problems = append(problems, FileProblem{Path: path, Msg: fmt.Sprintf("%d bytes: larger than the %d a file may have", info.Size(), maxSize)})
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			problems = append(problems, FileProblem{Path: path, Msg: "cannot read: " + pathError(err), Err: err})
			continue
		}
		files = append(files, File{Path: path, Data: data})
	}
	return files, problems, nil
}

// pathError is err without the path an *os.PathError repeats.
func pathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
