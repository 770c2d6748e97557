package yolo

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseNames reads the class names Ultralytics writes into the ONNX
// metadata: a Python dict literal of int keys and quoted string values,
// {0: 'person', 1: "dog's toy", ...}. Ids must run from 0 without gaps. It
// returns an error saying where the literal is malformed.
func ParseNames(s string) ([]string, error) {
	p := &pyLexer{s: s}
	if !p.eat('{') {
		return nil, p.errorf("expected {")
	}
	byID := map[int]string{}
	for !p.eat('}') {
		if len(byID) > 0 && !p.eat(',') {
			return nil, p.errorf("expected , or }")
		}
		if p.eat('}') { // trailing comma
			break
		}
		id, err := p.int()
		if err != nil {
			return nil, err
		}
		if !p.eat(':') {
			return nil, p.errorf("expected :")
		}
		name, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := byID[id]; dup {
			return nil, fmt.Errorf("class id %d appears twice", id)
		}
		byID[id] = name
	}
	names := make([]string, len(byID))
	for id, n := range byID {
		if id < 0 || id >= len(names) {
			return nil, fmt.Errorf("class ids are not 0..%d", len(names)-1)
		}
		names[id] = n
	}
	return names, nil
}

type pyLexer struct {
	s   string
	pos int
}

func (p *pyLexer) skip() {
	for p.pos < len(p.s) && strings.ContainsRune(" \t\r\n", rune(p.s[p.pos])) {
		p.pos++
	}
}

func (p *pyLexer) eat(c byte) bool {
	p.skip()
	if p.pos < len(p.s) && p.s[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *pyLexer) errorf(msg string) error {
	return fmt.Errorf("%s at offset %d", msg, p.pos)
}

func (p *pyLexer) int() (int, error) {
	p.skip()
	start := p.pos
	for p.pos < len(p.s) && (p.s[p.pos] >= '0' && p.s[p.pos] <= '9' || p.pos == start && p.s[p.pos] == '-') {
		p.pos++
	}
	n, err := strconv.Atoi(p.s[start:p.pos])
	if err != nil {
		return 0, p.errorf("expected a class id")
	}
	return n, nil
}

// str reads a single- or double-quoted Python string with backslash escapes.
func (p *pyLexer) str() (string, error) {
	p.skip()
	if p.pos >= len(p.s) || (p.s[p.pos] != '\'' && p.s[p.pos] != '"') {
		return "", p.errorf("expected a quoted name")
	}
	q := p.s[p.pos]
	p.pos++
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == q:
			return b.String(), nil
		case c == '\\' && p.pos < len(p.s):
			e := p.s[p.pos]
			p.pos++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'x', 'u':
				n := map[byte]int{'x': 2, 'u': 4}[e]
				if p.pos+n > len(p.s) {
					return "", p.errorf("bad escape")
				}
				r, err := strconv.ParseUint(p.s[p.pos:p.pos+n], 16, 32)
				if err != nil {
					return "", p.errorf("bad escape")
				}
				b.WriteRune(rune(r))
				p.pos += n
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", p.errorf("unterminated string")
}
