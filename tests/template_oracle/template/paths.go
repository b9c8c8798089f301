// Package template holds the one src-cli type the oracle reproduces, in a
// package of the same name so Go prints its type as src-cli's does.
package template

import "strings"

// fileMatchPathList prints as its paths joined by spaces.
type fileMatchPathList []string

func (f fileMatchPathList) String() string { return strings.Join(f, " ") }

// PathList makes the list src-cli's Repository.SearchResultPaths returns.
func PathList(paths []string) any { return fileMatchPathList(paths) }
