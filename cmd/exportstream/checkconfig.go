package main

import (
	"strings"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

// probeAdviceFor is what an operator does about connection i of cfg
// failing check-config --probe with outcome. A local connection gets the
// verdict on its folder and its exports' folders
// (config.CheckLocalConnection), or, when they look usable, advice about
// a folder on disk, never a cloud provider's advice.
func probeAdviceFor(cfg *config.Config, i int, outcome string) string {
	if cfg.Connections[i].Type != config.TypeLocal {
		return probeAdvice[outcome]
	}
	var verdicts []string
	for _, err := range cfg.CheckLocalConnection(i) {
		verdicts = append(verdicts, err.Error())
	}
	if len(verdicts) > 0 {
		return strings.Join(verdicts, "\n    ")
	}
	if advice, ok := localProbeAdvice[outcome]; ok {
		return advice
	}
	return localProbeAdvice[connectors.ProbeFailed]
}

// localProbeAdvice is what an operator does about a local connection
// whose folders look usable but which failed the probe anyway.
var localProbeAdvice = map[string]string{
	connectors.ProbeAccessDenied: "this user may not write, read or delete under the folder: fix the permissions of the folders and files under it (an export's path), or choose another folder",
	connectors.ProbeUnreachable:  "the disk did not answer in time: check the disk (a network file system may hang) or raise --timeout",
	connectors.ProbeFailed:       "the folder itself is usable: see the error above, and check the folders and files under it (an export's path) and the disk's free space",
}
