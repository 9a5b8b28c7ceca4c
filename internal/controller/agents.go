package controller

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// agentUID is the distroless "nonroot" user the agent image runs as.
const agentUID = 65532

func buildAgentServiceAccount(f *cachev1alpha1.CacheFleet) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: objectMeta(f, agentName(f), ComponentAgent)}
}

// buildAgentRole lets agents read exactly their ring and Secrets (the fleet's, and those the
// published policies' origins take headers from), and keep their convergence Lease. Lease
// creation cannot be limited by name in RBAC (the name is not known before creation), so
// leases are limited to the verbs an agent needs in the fleet's namespace.
func buildAgentRole(f *cachev1alpha1.CacheFleet, doc *contract.Document) *rbacv1.Role {
	secrets := []string{f.BusSecret().Name}
	if f.Spec.Auth.Enabled {
		secrets = append(secrets, f.PasswordSecret().Name)
	}
	if doc != nil {
		for _, name := range doc.OriginHeaderSecrets() {
			if !slices.Contains(secrets, name) {
				secrets = append(secrets, name)
			}
		}
	}
	return &rbacv1.Role{
		ObjectMeta: objectMeta(f, agentName(f), ComponentAgent),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{ringConfigMapName(f)}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: secrets, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		},
	}
}

func buildAgentRoleBinding(f *cachev1alpha1.CacheFleet) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: objectMeta(f, agentName(f), ComponentAgent),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: agentName(f)},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: agentName(f), Namespace: f.Namespace}},
	}
}

// agentShutdownDelay is how long a stopping agent serves while not ready.
const agentShutdownDelay = 5 * time.Second

// buildAgentDaemonSet runs one agent per eligible node.
func buildAgentDaemonSet(f *cachev1alpha1.CacheFleet, defaultImage string) *appsv1.DaemonSet {
	a := f.Spec.Agent
	image := a.Image
	if image == "" {
		image = defaultImage
	}
	selector := selectorLabels(f, ComponentAgent)
	httpProbe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds:    period,
			TimeoutSeconds:   2,
			FailureThreshold: failures,
		}
	}
	return &appsv1.DaemonSet{
		ObjectMeta: objectMeta(f, agentName(f), ComponentAgent),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type: appsv1.RollingUpdateDaemonSetStrategyType,
				// The node's next agent starts and turns ready before the old one drains
				// (--shutdown-delay): applications on the node see their connections reset
				// once, and reconnect at once, never a node without an agent.
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: commonLabels(f, ComponentAgent)},
				Spec: corev1.PodSpec{
					ServiceAccountName:            agentName(f),
					EnableServiceLinks:            ptr.To(false),
					SecurityContext:               restrictedPod(agentUID),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					NodeSelector:                  a.NodeSelector,
					Tolerations:                   a.Tolerations,
					Containers: []corev1.Container{{
						Name:  "agent",
						Image: image,
						Args:  agentArgs(f),
						Env: []corev1.EnvVar{
							fieldEnv("POD_NAME", "metadata.name"),
							fieldEnv("POD_NAMESPACE", "metadata.namespace"),
							fieldEnv("NODE_NAME", "spec.nodeName"),
							// The agent keeps its Go heap under 90% of it (cmd/agent): the GC works
							// harder near the limit instead of the kernel killing every node's cache.
							{Name: "MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
								ContainerName: "agent", Resource: "limits.memory"}}},
						},
						Ports: []corev1.ContainerPort{
							{Name: "resp", ContainerPort: a.Port, Protocol: corev1.ProtocolTCP},
							{Name: "http", ContainerPort: a.HTTPPort, Protocol: corev1.ProtocolTCP},
						},
						Resources:       a.Resources,
						ReadinessProbe:  httpProbe("/readyz", 5, 2),
						LivenessProbe:   httpProbe("/healthz", 10, 6),
						SecurityContext: restrictedContainer(),
					}},
				},
			},
		},
	}
}

func agentArgs(f *cachev1alpha1.CacheFleet) []string {
	a := f.Spec.Agent
	args := []string{
		"--fleet=" + f.Name,
		"--namespace=" + f.Namespace,
		fmt.Sprintf("--listen=:%d", a.Port),
		fmt.Sprintf("--http-listen=:%d", a.HTTPPort),
		fmt.Sprintf("--max-clients=%d", a.Limits.MaxClients),
		// Longer than kube-proxy takes to drop a terminating endpoint, well inside the grace period.
		"--shutdown-delay=" + agentShutdownDelay.String(),
	}
	if o := a.Limits.ClientOutputBuffer; !o.Hard.IsZero() {
		args = append(args,
			fmt.Sprintf("--client-output-hard-bytes=%d", o.Hard.Value()),
			fmt.Sprintf("--client-output-soft-bytes=%d", o.Soft.Value()),
			fmt.Sprintf("--client-output-soft-seconds=%d", o.SoftSeconds),
			fmt.Sprintf("--client-output-total-bytes=%d", o.Total.Value()))
	}
	// A CPU limit of n cores runs the agent's Go code on n threads (at least one); without a
	// limit the agent's own default applies (two), not every core of the node.
	if cpu, ok := a.Resources.Limits[corev1.ResourceCPU]; ok && !cpu.IsZero() {
		args = append(args, fmt.Sprintf("--procs=%d", max(1, (cpu.MilliValue()+999)/1000)))
	}
	return args
}

// buildAgentService reaches the agent on the caller's own node: internalTrafficPolicy Local keeps
// an app's L1 hits on its node and never crosses to another node's agent.
func buildAgentService(f *cachev1alpha1.CacheFleet) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: objectMeta(f, agentName(f), ComponentAgent),
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
			Selector:              selectorLabels(f, ComponentAgent),
			Ports: []corev1.ServicePort{
				{Name: "resp", Port: f.Spec.Agent.Port, TargetPort: intstr.FromString("resp"), Protocol: corev1.ProtocolTCP},
				{Name: "http", Port: f.Spec.Agent.HTTPPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// leaseLiveness is how long after its last renewal a Lease still counts when it states no duration.
const leaseLiveness = 30 * time.Second

// countConverged counts live agent Leases that report serving epoch.
func countConverged(leases []coordinationv1.Lease, epoch int64, now time.Time) int32 {
	var n int32
	for i := range leases {
		l := &leases[i]
		if l.Annotations[AnnotationRingEpoch] != strconv.FormatInt(epoch, 10) || l.Spec.RenewTime == nil {
			continue
		}
		ttl := leaseLiveness
		if l.Spec.LeaseDurationSeconds != nil {
			ttl = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		if now.Sub(l.Spec.RenewTime.Time) <= ttl {
			n++
		}
	}
	return n
}
