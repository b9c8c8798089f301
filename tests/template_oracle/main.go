// Command templateoracle renders each case of a JSON table with Go's
// text/template, set up the way src-cli sets it up for batch specs: the
// delimiters ${{ }}, missingkey=error, Sourcegraph's helper functions, and each
// key of the context registered as a function of no arguments returning its
// value. The context itself is the template's data.
//
// Usage: templateoracle cases.json > results.json
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf8"

	srctemplate "runner.test/templateoracle/template"
)

type table struct {
	DefaultContext json.RawMessage `json:"default_context"`
	Cases          []testCase      `json:"cases"`
}

type testCase struct {
	Name              string          `json:"name"`
	Template          string          `json:"template"`
	Context           json.RawMessage `json:"context"`
	SearchResultPaths []string        `json:"search_result_paths"`
}

type result struct {
	Name    string  `json:"name"`
	Output  *string `json:"output,omitempty"`
	Error   bool    `json:"error,omitempty"`
	Message string  `json:"message,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: templateoracle cases.json")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var t table
	if err := json.Unmarshal(raw, &t); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	results := make([]result, 0, len(t.Cases))
	for _, c := range t.Cases {
		ctx := c.Context
		if len(ctx) == 0 {
			ctx = t.DefaultContext
		}
		results = append(results, run(c, ctx))
	}
	out, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	os.Stdout.Write([]byte("\n"))
}

func run(c testCase, rawCtx json.RawMessage) (res result) {
	res.Name = c.Name
	defer func() {
		if r := recover(); r != nil {
			res.Output = nil
			res.Error = true
			res.Message = fmt.Sprintf("panic: %v", r)
		}
	}()
	data, err := decodeContext(rawCtx, c.SearchResultPaths)
	if err != nil {
		panic(err)
	}
	roots := template.FuncMap{}
	for name, value := range data {
		value := value
		roots[name] = func() any { return value }
	}
	tmpl, err := template.New(c.Name).
		Delims("${{", "}}").
		Option("missingkey=error").
		Funcs(helpers).
		Funcs(roots).
		Parse(c.Template)
	if err == nil {
		var buf bytes.Buffer
		if err = tmpl.Execute(&buf, data); err == nil {
			s := buf.String()
			res.Output = &s
			return res
		}
	}
	res.Error = true
	res.Message = err.Error()
	return res
}

// decodeContext decodes JSON so that integral numbers are ints, other numbers
// float64s, lists of strings []string (other lists []any, with len == cap),
// and the marked paths (plus repository.search_result_paths) path lists.
func decodeContext(raw json.RawMessage, pathLists []string) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	data := convert(v).(map[string]any)
	marks := append([]string{"repository.search_result_paths"}, pathLists...)
	for _, mark := range marks {
		keys := strings.Split(mark, ".")
		m := data
		for i, key := range keys {
			if i == len(keys)-1 {
				if list, ok := m[key].([]string); ok {
					paths := append([]string(nil), list...)
					sort.Strings(paths)
					m[key] = srctemplate.PathList(paths)
				}
				break
			}
			next, ok := m[key].(map[string]any)
			if !ok {
				break
			}
			m = next
		}
	}
	return data, nil
}

func convert(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return int(i)
		}
		f, _ := strconv.ParseFloat(string(x), 64)
		return f
	case []any:
		allStrings := true
		for _, item := range x {
			if _, ok := item.(string); !ok {
				allStrings = false
				break
			}
		}
		if allStrings {
			out := make([]string, len(x))
			for i, item := range x {
				out[i] = item.(string)
			}
			return out
		}
		out := make([]any, len(x))
		for i, item := range x {
			out[i] = convert(item)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			out[k] = convert(item)
		}
		return out
	default:
		return x
	}
}

var helpers = template.FuncMap{
	"join":    strings.Join,
	"split":   strings.Split,
	"replace": strings.ReplaceAll,
	"join_if": func(sep string, elems ...string) string {
		kept := make([]string, 0, len(elems))
		for _, e := range elems {
			if e != "" {
				kept = append(kept, e)
			}
		}
		return strings.Join(kept, sep)
	},
	"matches": func(in, pattern string) (bool, error) {
		re, err := compileGlob(pattern)
		if err != nil {
			return false, err
		}
		return re.MatchString(in), nil
	},
}

// compileGlob reads a pattern the way github.com/gobwas/glob does when given
// no separators, and turns it into a regular expression with the pattern's
// meaning. (gobwas/glob's own matchers get a few patterns wrong, e.g. "a*a"
// matches "a" there; runner does not copy those, so neither does the oracle.)
func compileGlob(pattern string) (*regexp.Regexp, error) {
	l := &globLexer{data: pattern}
	var b strings.Builder
	b.WriteString(`^(?s:`)
	// Each open {...} is a group; a comma inside it separates alternatives.
	open := 0
	for {
		tok := l.next()
		switch tok.kind {
		case gEOF:
			// An unclosed { is accepted; close its groups.
			for ; open > 0; open-- {
				b.WriteString(`)`)
			}
			b.WriteString(`)$`)
			return regexp.Compile(b.String())
		case gError:
			return nil, fmt.Errorf("%s", tok.raw)
		case gText:
			b.WriteString(regexp.QuoteMeta(tok.raw))
		case gAny, gSuper:
			b.WriteString(`.*`)
		case gSingle:
			b.WriteString(`.`)
		case gTermsOpen:
			open++
			b.WriteString(`(?:`)
		case gSeparator:
			b.WriteString(`|`)
		case gTermsClose:
			open--
			b.WriteString(`)`)
		case gRangeOpen:
			class, err := l.parseRange()
			if err != nil {
				return nil, err
			}
			b.WriteString(class)
		default:
			return nil, fmt.Errorf("unexpected token %q", tok.raw)
		}
	}
}

const (
	gEOF = iota
	gError
	gText
	gAny
	gSuper
	gSingle
	gNot
	gSeparator
	gRangeOpen
	gRangeClose
	gRangeLo
	gRangeHi
	gRangeBetween
	gTermsOpen
	gTermsClose
)

type globToken struct {
	kind int
	raw  string
}

// globLexer scans like gobwas/glob's lexer, including its quirks: a NUL
// reads as the end of input and U+FFFD cannot be read at all.
type globLexer struct {
	data       string
	pos        int
	err        string
	tokens     []globToken
	termsLevel int
	lastRune   rune
	lastSize   int
	hasRune    bool
}

func (l *globLexer) next() globToken {
	for {
		if l.err != "" {
			return globToken{gError, l.err}
		}
		if len(l.tokens) > 0 {
			t := l.tokens[0]
			l.tokens = l.tokens[1:]
			return t
		}
		l.fetchItem()
	}
}

func (l *globLexer) peek() (rune, int) {
	if l.pos == len(l.data) {
		return 0, 0
	}
	r, w := utf8.DecodeRuneInString(l.data[l.pos:])
	if r == utf8.RuneError {
		l.err = "could not read rune"
		return 0, 0
	}
	return r, w
}

func (l *globLexer) read() rune {
	if l.hasRune {
		l.hasRune = false
		l.pos += l.lastSize
		return l.lastRune
	}
	r, s := l.peek()
	l.pos += s
	l.lastRune, l.lastSize = r, s
	return r
}

func (l *globLexer) unread() {
	if l.hasRune {
		l.err = "could not unread rune"
		return
	}
	l.pos -= l.lastSize
	l.hasRune = true
}

func (l *globLexer) push(kind int, raw string) {
	l.tokens = append(l.tokens, globToken{kind, raw})
}

func (l *globLexer) fetchItem() {
	r := l.read()
	inTerms := l.termsLevel > 0
	switch {
	case r == 0:
		l.push(gEOF, "")
	case r == '{':
		l.termsLevel++
		l.push(gTermsOpen, "{")
	case r == ',' && inTerms:
		l.push(gSeparator, ",")
	case r == '}' && inTerms:
		l.push(gTermsClose, "}")
		l.termsLevel--
	case r == '[':
		l.push(gRangeOpen, "[")
		l.fetchRange()
	case r == '?':
		l.push(gSingle, "?")
	case r == '*':
		if l.read() == '*' {
			l.push(gSuper, "**")
		} else {
			l.unread()
			l.push(gAny, "*")
		}
	default:
		l.unread()
		if inTerms {
			l.fetchText("?*[{},")
		} else {
			l.fetchText("?*[{")
		}
	}
}

func (l *globLexer) fetchRange() {
	wantHi, wantClose, seenNot := false, false, false
	for {
		r := l.read()
		if r == 0 {
			l.err = "unexpected end of input"
			return
		}
		if wantClose {
			if r != ']' {
				l.err = "expected close range character"
			} else {
				l.push(gRangeClose, "]")
			}
			return
		}
		if wantHi {
			l.push(gRangeHi, string(r))
			wantClose = true
			continue
		}
		if !seenNot && r == '!' {
			l.push(gNot, "!")
			seenNot = true
			continue
		}
		if n, w := l.peek(); n == '-' {
			l.pos += w
			l.push(gRangeLo, string(r))
			l.push(gRangeBetween, "-")
			wantHi = true
			continue
		}
		l.unread()
		l.fetchText("]")
		wantClose = true
	}
}

func (l *globLexer) fetchText(breakers string) {
	var data []rune
	escaped := false
	for {
		r := l.read()
		if r == 0 {
			break
		}
		if !escaped {
			if r == '\\' {
				escaped = true
				continue
			}
			if strings.ContainsRune(breakers, r) {
				l.unread()
				break
			}
		}
		escaped = false
		data = append(data, r)
	}
	if len(data) > 0 {
		l.push(gText, string(data))
	}
}

// parseRange reads the tokens after "[" up to "]" into a character class.
func (l *globLexer) parseRange() (string, error) {
	not := false
	var lo, hi rune
	chars := ""
	for {
		tok := l.next()
		switch tok.kind {
		case gEOF:
			return "", fmt.Errorf("unexpected end")
		case gError:
			return "", fmt.Errorf("%s", tok.raw)
		case gNot:
			not = true
		case gRangeLo:
			lo, _ = utf8.DecodeRuneInString(tok.raw)
		case gRangeHi:
			hi, _ = utf8.DecodeRuneInString(tok.raw)
			if hi < lo {
				return "", fmt.Errorf("hi character %q should be greater than lo %q", hi, lo)
			}
		case gText:
			chars = tok.raw
		case gRangeClose:
			isRange := lo != 0 && hi != 0
			if (chars != "") == isRange {
				return "", fmt.Errorf("could not parse range")
			}
			var b strings.Builder
			b.WriteString("[")
			if not {
				b.WriteString("^")
			}
			if isRange {
				fmt.Fprintf(&b, `\x{%x}-\x{%x}`, lo, hi)
			} else {
				for _, r := range chars {
					fmt.Fprintf(&b, `\x{%x}`, r)
				}
			}
			b.WriteString("]")
			return b.String(), nil
		}
	}
}
