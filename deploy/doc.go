// Package deploy holds no Go code: the folder carries what ops need to
// deploy exportstream (a container image, Kubernetes manifests, a 3-node
// NATS JetStream cluster, a systemd unit, example configs, a Grafana
// dashboard and Prometheus alerts; README.md says how to use each).
//
// Its tests check those files against the service and each other: every
// example config passes `exportstream check-config`, the NATS configs go
// through nats-server's own parser and form a JetStream cluster, the
// manifests agree on names, labels, ports and paths, and the dashboard and
// alerts use only the metric names the service exports.
package deploy
