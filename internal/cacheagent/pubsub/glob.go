package pubsub

// Match reports whether s matches the glob pattern as Valkey's stringmatchlen (case-sensitive)
// matches it: *, ?, [abc], [^a-z], and \ escapes. The agent needs it to count, for PUBLISH,
// the pattern subscriptions of its own clients.
func Match(pattern, s string) bool {
	skip := false
	return match(pattern, s, &skip, 0)
}

func match(p, s string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 { // as Valkey: abusive patterns match nothing
		return false
	}
	for len(p) > 0 && len(s) > 0 {
		switch p[0] {
		case '*':
			return matchStar(p, s, skipLonger, nesting)
		case '?':
			s = s[1:]
		case '[':
			var ok bool
			if p, ok = matchClass(p[1:], s[0]); !ok {
				return false
			}
			s = s[1:]
		case '\\':
			if len(p) >= 2 {
				p = p[1:]
			}
			fallthrough
		default:
			if p[0] != s[0] {
				return false
			}
			s = s[1:]
		}
		p = p[1:]
		if len(s) == 0 {
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			break
		}
	}
	return len(p) == 0 && len(s) == 0
}

// matchStar matches s against p, which starts with '*'.
func matchStar(p, s string, skipLonger *bool, nesting int) bool {
	for len(p) > 1 && p[1] == '*' {
		p = p[1:]
	}
	if len(p) == 1 {
		return true
	}
	for len(s) > 0 {
		if match(p[1:], s, skipLonger, nesting+1) {
			return true
		}
		if *skipLonger {
			return false
		}
		s = s[1:]
	}
	// No match for the rest anywhere in s: an earlier * need not try longer matches.
	*skipLonger = true
	return false
}

// matchClass matches c against the class at the start of p (after its '['); it returns p at
// the class's closing ']' (for the caller's step to take) and whether c is in the class.
func matchClass(p string, c byte) (string, bool) {
	not := len(p) > 0 && p[0] == '^'
	if not {
		p = p[1:]
	}
	in := false
	for {
		switch {
		case len(p) >= 2 && p[0] == '\\':
			p = p[1:]
			in = in || p[0] == c
		case len(p) > 0 && p[0] == ']':
			return p, in != not
		case len(p) == 0:
			// Unclosed: Valkey steps back one, and its caller's step takes it.
			return "]", in != not
		case len(p) >= 3 && p[1] == '-':
			lo, hi := p[0], p[2]
			if lo > hi {
				lo, hi = hi, lo
			}
			p = p[2:]
			in = in || (c >= lo && c <= hi)
		default:
			in = in || p[0] == c
		}
		p = p[1:]
	}
}
