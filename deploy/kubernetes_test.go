package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The subset of the Kubernetes objects the tests look at.

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`

	file string
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type workloadSpec struct {
	Replicas    *int          `yaml:"replicas"`
	ServiceName string        `yaml:"serviceName"`
	Selector    labelSelector `yaml:"selector"`
	Template    struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Resources struct {
				Requests map[string]string `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	} `yaml:"volumeClaimTemplates"`
}

type podSpec struct {
	ServiceAccountName            string          `yaml:"serviceAccountName"`
	TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               securityContext `yaml:"securityContext"`
	Containers                    []container     `yaml:"containers"`
	Volumes                       []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir              any `yaml:"emptyDir"`
		PersistentVolumeClaim any `yaml:"persistentVolumeClaim"`
	} `yaml:"volumes"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env       []envVar `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe    *probe          `yaml:"startupProbe"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // number or port name
	} `yaml:"httpGet"`
}

type serviceSpec struct {
	ClusterIP string            `yaml:"clusterIP"`
	Selector  map[string]string `yaml:"selector"`
	Ports     []servicePort     `yaml:"ports"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort any    `yaml:"targetPort"` // number or port name
}

type pdbSpec struct {
	MinAvailable   *int          `yaml:"minAvailable"`
	MaxUnavailable *int          `yaml:"maxUnavailable"`
	Selector       labelSelector `yaml:"selector"`
}

type kustomization struct {
	Kind               string   `yaml:"kind"`
	Namespace          string   `yaml:"namespace"`
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

func spec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var s T
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s: %s %s: spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
	return s
}

// manifests reads every Kubernetes manifest in dir (all *.yaml but the
// kustomization) and checks that each document is a namespace-agnostic
// object with apiVersion, kind and metadata.name.
func manifests(t *testing.T, dir string) (objs []k8sObject, kust kustomization) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			ks := yamlDocs[kustomization](t, f)
			if len(ks) != 1 || ks[0].Kind != "Kustomization" {
				t.Fatalf("%s: want one Kustomization document", f)
			}
			kust = ks[0]
			continue
		}
		for i, o := range yamlDocs[k8sObject](t, f) {
			o.file = f
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", f, i+1)
			}
			if o.Metadata.Namespace != "" {
				t.Errorf("%s: %s %s sets a namespace: the manifests are namespace-agnostic", f, o.Kind, o.Metadata.Name)
			}
			objs = append(objs, o)
		}
	}
	if kust.Namespace != "" {
		t.Errorf("%s/kustomization.yaml sets a namespace", dir)
	}
	return objs, kust
}

func find(t *testing.T, objs []k8sObject, kind string) k8sObject {
	t.Helper()
	var found []k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, found %d", kind, len(found))
	}
	return found[0]
}

// checkKustomization: every resource and generator file exists, and every
// manifest in the folder is listed, except those in unlisted.
func checkKustomization(t *testing.T, dir string, k kustomization, objs []k8sObject, unlisted ...string) {
	t.Helper()
	listed := map[string]bool{}
	for _, r := range k.Resources {
		listed[r] = true
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("%s/kustomization.yaml: configMapGenerator %s: %v", dir, g.Name, err)
			}
		}
	}
	for _, o := range objs {
		base := filepath.Base(o.file)
		switch {
		case slices.Contains(unlisted, base) && listed[base]:
			t.Errorf("%s/kustomization.yaml lists %s, which must not be applied", dir, base)
		case !slices.Contains(unlisted, base) && !listed[base]:
			t.Errorf("%s/kustomization.yaml does not list %s", dir, base)
		}
	}
}

// selects reports whether every label of sel is in labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort resolves a probe's or Service's port (a number or the
// name of one of c's ports) to a container port, or 0.
func containerPort(c container, port any) int {
	switch p := port.(type) {
	case int:
		for _, cp := range c.Ports {
			if cp.ContainerPort == p {
				return p
			}
		}
	case string:
		for _, cp := range c.Ports {
			if cp.Name == p {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }

// checkHardened: non-root, no privilege escalation, read-only root, all
// capabilities dropped, the runtime's default seccomp profile.
func checkHardened(t *testing.T, name string, pod podSpec, c container) {
	t.Helper()
	if !isTrue(pod.SecurityContext.RunAsNonRoot) && !isTrue(c.SecurityContext.RunAsNonRoot) {
		t.Errorf("%s: runAsNonRoot is not true", name)
	}
	for _, u := range []*int64{pod.SecurityContext.RunAsUser, c.SecurityContext.RunAsUser} {
		if u != nil && *u == 0 {
			t.Errorf("%s: runAsUser 0", name)
		}
	}
	if !isFalse(c.SecurityContext.AllowPrivilegeEscalation) {
		t.Errorf("%s: allowPrivilegeEscalation is not false", name)
	}
	if !isTrue(c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Errorf("%s: readOnlyRootFilesystem is not true", name)
	}
	if !slices.Equal(c.SecurityContext.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("%s: capabilities.drop = %v, want [ALL]", name, c.SecurityContext.Capabilities.Drop)
	}
	if pod.SecurityContext.SeccompProfile.Type != "RuntimeDefault" && c.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", name)
	}
}

func mountPath(c container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// configMapVolume returns the name of the volume of pod backed by the
// ConfigMap cm.
func configMapVolume(pod podSpec, cm string) string {
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm {
			return v.Name
		}
	}
	return ""
}

// flagValue returns the value after flag in args, or "".
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// exportstreamManifests is deploy/kubernetes, read and checked for
// structure.
type exportstreamManifests struct {
	objs       []k8sObject
	kust       kustomization
	deployment k8sObject
	workload   workloadSpec
	pod        podSpec
	container  container
	configMap  k8sObject
	secret     k8sObject
}

func readExportstreamManifests(t *testing.T) exportstreamManifests {
	t.Helper()
	var m exportstreamManifests
	m.objs, m.kust = manifests(t, "kubernetes")
	m.deployment = find(t, m.objs, "Deployment")
	m.workload = spec[workloadSpec](t, m.deployment)
	m.pod = m.workload.Template.Spec
	if len(m.pod.Containers) != 1 {
		t.Fatalf("Deployment: want 1 container, got %d", len(m.pod.Containers))
	}
	m.container = m.pod.Containers[0]
	m.configMap = find(t, m.objs, "ConfigMap")
	m.secret = find(t, m.objs, "Secret")
	return m
}

// configMapConfig returns the config.yaml the Kubernetes ConfigMap holds.
func configMapConfig(t *testing.T) []byte {
	t.Helper()
	m := readExportstreamManifests(t)
	cfg, ok := m.configMap.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no config.yaml", m.configMap.Metadata.Name)
	}
	return []byte(cfg)
}

func TestKubernetes(t *testing.T) {
	m := readExportstreamManifests(t)
	c := m.container
	checkKustomization(t, "kubernetes", m.kust, m.objs, "secret.example.yaml")

	if base := filepath.Base(m.secret.file); base != "secret.example.yaml" {
		t.Errorf("the Secret is in %s, want secret.example.yaml", base)
	}
	if !strings.Contains(readFile(t, m.secret.file), "EXAMPLE") {
		t.Errorf("secret.example.yaml does not say it is an example")
	}
	for k, v := range m.secret.StringData {
		if !strings.Contains(v, "REPLACE-ME") {
			t.Errorf("secret.example.yaml: %s = %q is not a placeholder (REPLACE-ME)", k, v)
		}
	}

	t.Run("Deployment", func(t *testing.T) {
		w := m.workload
		if w.Replicas == nil || *w.Replicas < 2 {
			t.Errorf("replicas = %v, want >= 2", w.Replicas)
		}
		if !selects(w.Selector.MatchLabels, w.Template.Metadata.Labels) {
			t.Errorf("selector %v does not match the pod labels %v", w.Selector.MatchLabels, w.Template.Metadata.Labels)
		}
		if g := m.pod.TerminationGracePeriodSeconds; g == nil || *g < 30 {
			t.Errorf("terminationGracePeriodSeconds = %v, want >= 30", g)
		}
		checkHardened(t, "exportstream", m.pod, c)
		for _, r := range []string{"cpu", "memory"} {
			if c.Resources.Requests[r] == "" {
				t.Errorf("no resources.requests.%s", r)
			}
		}
		if c.Resources.Limits["memory"] == "" {
			t.Errorf("no resources.limits.memory")
		}
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" && byteSize(t, e.Value) >= byteSize(t, c.Resources.Limits["memory"]) {
				t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", e.Value, c.Resources.Limits["memory"])
			}
		}
		if sa := m.pod.ServiceAccountName; sa != "" && !slices.ContainsFunc(m.objs, func(o k8sObject) bool {
			return o.Kind == "ServiceAccount" && o.Metadata.Name == sa
		}) {
			t.Errorf("serviceAccountName %s: no such ServiceAccount", sa)
		}
		if len(m.kust.Images) != 1 || m.kust.Images[0].Name != c.Image {
			t.Errorf("kustomization images %+v do not set the container image %q", m.kust.Images, c.Image)
		}
	})

	t.Run("Probes", func(t *testing.T) {
		port := httpListenPort(t, parseYAMLMap(t, "ConfigMap config.yaml", configMapConfig(t)))
		if len(c.Ports) == 0 || c.Ports[0].ContainerPort != port {
			t.Fatalf("container ports %+v, want %d (the config's http.listen)", c.Ports, port)
		}
		for _, p := range []struct {
			name, path string
			probe      *probe
			required   bool
		}{
			{"livenessProbe", "/healthz", c.LivenessProbe, true},
			{"readinessProbe", "/readyz", c.ReadinessProbe, true},
			{"startupProbe", "/healthz", c.StartupProbe, false},
		} {
			switch {
			case p.probe == nil && p.required:
				t.Errorf("no %s", p.name)
			case p.probe == nil:
			case p.probe.HTTPGet == nil:
				t.Errorf("%s is not an HTTP GET", p.name)
			default:
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s path %q, want %s", p.name, p.probe.HTTPGet.Path, p.path)
				}
				if got := containerPort(c, p.probe.HTTPGet.Port); got != port {
					t.Errorf("%s port %v is container port %d, want %d", p.name, p.probe.HTTPGet.Port, got, port)
				}
			}
		}
	})

	t.Run("Config", func(t *testing.T) {
		vol := configMapVolume(m.pod, m.configMap.Metadata.Name)
		if vol == "" {
			t.Fatalf("no volume of ConfigMap %s", m.configMap.Metadata.Name)
		}
		dir := mountPath(c, vol)
		if dir != "/etc/exportstream" {
			t.Errorf("ConfigMap mounted at %q, want /etc/exportstream", dir)
		}
		args := c.Args
		if len(c.Command) == 0 && len(args) == 0 {
			args = dockerfileCMD(t)
		}
		if len(args) == 0 || args[0] != "run" || flagValue(args, "--config") != dir+"/config.yaml" {
			t.Errorf("container args %q do not run with --config %s/config.yaml", args, dir)
		}
		// Every ${NAME} of the config is set in the container.
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
		}
		for _, ref := range envRefs(t, "ConfigMap config.yaml", configMapConfig(t)) {
			if !env[ref] {
				t.Errorf("the config refers to ${%s}, which the container's env does not set", ref)
			}
		}
		// Secret references point at the example Secret's name and keys.
		refs := 0
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			refs++
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != m.secret.Metadata.Name {
				t.Errorf("env %s: secretKeyRef %s, want the Secret %s of secret.example.yaml", e.Name, ref.Name, m.secret.Metadata.Name)
			}
			if _, ok := m.secret.StringData[ref.Key]; !ok {
				t.Errorf("env %s: key %s is not in secret.example.yaml (%v)", e.Name, ref.Key, slices.Sorted(maps.Keys(m.secret.StringData)))
			}
		}
		if refs == 0 {
			t.Errorf("no env from secretKeyRef")
		}
	})

	// The root file system is read-only: every folder the config has the
	// service write to (the local state store above all) is a mounted,
	// writable volume of the pod's own, an emptyDir (or, in a
	// StatefulSet, a volumeClaimTemplate), never a PersistentVolumeClaim
	// every replica would share (the process locks the state store).
	t.Run("DataDirs", func(t *testing.T) {
		cfg := parseYAMLMap(t, "ConfigMap config.yaml", configMapConfig(t))
		dirs := dataDirs(cfg)
		if cfg.str("state.dir") == "" {
			t.Errorf("the ConfigMap's config does not set state.dir: the default %s is on the read-only root", defaultStateDir)
		}
		claims := map[string]bool{}
		for _, v := range m.workload.VolumeClaimTemplates {
			claims[v.Metadata.Name] = true
		}
		for _, d := range dirs {
			if !filepath.IsAbs(d.dir) {
				t.Errorf("%s %s is relative: the working directory / is on the read-only root", d.key, d.dir)
				continue
			}
			var mount *volumeMount
			for i, vm := range c.VolumeMounts {
				if under(d.dir, vm.MountPath) && (mount == nil || len(vm.MountPath) > len(mount.MountPath)) {
					mount = &c.VolumeMounts[i]
				}
			}
			if mount == nil {
				t.Errorf("%s %s: no volume mounted there (mounts %+v); the root file system is read-only", d.key, d.dir, c.VolumeMounts)
				continue
			}
			if mount.ReadOnly {
				t.Errorf("%s %s: volume %s is mounted read-only", d.key, d.dir, mount.Name)
			}
			if mount.MountPath == "/tmp" {
				t.Errorf("%s %s: in /tmp, the small scratch volume; give it a volume of its own", d.key, d.dir)
			}
			ok := claims[mount.Name]
			for _, v := range m.pod.Volumes {
				if v.Name != mount.Name {
					continue
				}
				switch {
				case v.EmptyDir != nil:
					ok = true
				case v.PersistentVolumeClaim != nil:
					t.Errorf("%s %s: volume %s is a PersistentVolumeClaim all replicas would share; use an emptyDir or a StatefulSet's volumeClaimTemplates", d.key, d.dir, v.Name)
					ok = true // reported
				}
			}
			if !ok {
				t.Errorf("%s %s: volume %s is neither an emptyDir nor a volumeClaimTemplate", d.key, d.dir, mount.Name)
			}
		}
	})

	t.Run("Service", func(t *testing.T) {
		svc := find(t, m.objs, "Service")
		s := spec[serviceSpec](t, svc)
		if !selects(s.Selector, m.workload.Template.Metadata.Labels) {
			t.Errorf("selector %v does not match the pod labels", s.Selector)
		}
		port := c.Ports[0].ContainerPort
		if len(s.Ports) != 1 || s.Ports[0].Port != port || containerPort(c, s.Ports[0].TargetPort) != port {
			t.Errorf("ports %+v, want port %d to the container's", s.Ports, port)
		}
		a := svc.Metadata.Annotations
		want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": fmt.Sprint(port), "prometheus.io/path": "/metrics"}
		for k, v := range want {
			if a[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, a[k], v)
			}
		}
	})

	t.Run("PodDisruptionBudget", func(t *testing.T) {
		p := spec[pdbSpec](t, find(t, m.objs, "PodDisruptionBudget"))
		checkPDB(t, p, m.workload)
	})
}

func checkPDB(t *testing.T, p pdbSpec, w workloadSpec) {
	t.Helper()
	if !selects(p.Selector.MatchLabels, w.Template.Metadata.Labels) {
		t.Errorf("PDB selector %v does not match the pod labels %v", p.Selector.MatchLabels, w.Template.Metadata.Labels)
	}
	replicas := *w.Replicas
	switch {
	case p.MaxUnavailable != nil && p.MinAvailable == nil:
		if *p.MaxUnavailable != 1 {
			t.Errorf("maxUnavailable %d, want 1", *p.MaxUnavailable)
		}
	case p.MinAvailable != nil && p.MaxUnavailable == nil:
		if *p.MinAvailable < 2 || *p.MinAvailable >= replicas {
			t.Errorf("minAvailable %d, want 2..%d (a drain must be able to proceed)", *p.MinAvailable, replicas-1)
		}
	default:
		t.Errorf("set exactly one of minAvailable and maxUnavailable")
	}
}
