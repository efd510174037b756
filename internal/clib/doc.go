//go:build linux

// Package clib tests libportres, the C client of portresd, and its
// Winsock layer (libportres/ at the repository's root) from Go, against
// real brokers in the test's network namespace: it builds the library
// with the system C compiler (make), runs its C unit and fuzz tests plain
// and under AddressSanitizer and UndefinedBehaviorSanitizer, runs the
// conformance suite (the same script through the Go client and through
// libportres must print the same lines), compiles the two sample programs
// of the port reservation documentation unmodified with g++ and compares
// their output with `portres sample`'s, builds and runs the examples/
// programs, and installs the library to check its pkg-config files.
//
// It has no code of its own; everything is in its tests.
package clib
