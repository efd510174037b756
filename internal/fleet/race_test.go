//go:build linux && race

package fleet_test

// raceBuild: under -race the cluster's brokers are built with the race
// detector too, so the broker's side of the fleet is checked as well.
const raceBuild = true
