package controller

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// buildNetworkPolicy lets only the fleet's agents, its shard pods (replication) and the operator
// (failover) reach the shards' Valkey port: applications go through the agents.
func buildNetworkPolicy(f *cachev1alpha1.CacheFleet) *networkingv1.NetworkPolicy {
	from := func(component string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(f, component)}}
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: objectMeta(f, networkPolicyName(f), ComponentShard),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selectorLabels(f, ComponentShard)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{from(ComponentAgent), from(ComponentShard), {
					// The manager runs in its own namespace (config/manager's labels).
					NamespaceSelector: &metav1.LabelSelector{},
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
						"app.kubernetes.io/name": "cachefleet", LabelComponent: "manager"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{
					Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(ValkeyPort)),
				}},
			}},
		},
	}
}
