package config

import "strings"

// IsDNSLabel reports whether s is an RFC 1123 label: lowercase alphanumerics and
// '-', starting and ending alphanumeric, at most 63 characters.
func IsDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// IsDNSSubdomain reports whether s is an RFC 1123 subdomain: dot-separated labels,
// at most 253 characters (Kubernetes' rule for service account names).
func IsDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !IsDNSLabel(l) {
			return false
		}
	}
	return true
}
