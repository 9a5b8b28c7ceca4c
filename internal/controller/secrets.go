package controller

import (
	"crypto/rand"
	"encoding/base64"

	corev1 "k8s.io/api/core/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// generatedSecret is a Secret the controller creates once with a random value and never
// overwrites: rotating it would cut every client off. nil when the spec references its own.
type generatedSecret struct {
	ref       cachev1alpha1.SecretKeyRef
	component string
}

// generatedSecrets lists the Secrets this fleet needs the controller to generate.
func generatedSecrets(f *cachev1alpha1.CacheFleet) []generatedSecret {
	var out []generatedSecret
	if f.Spec.Auth.Enabled && f.Spec.Auth.PasswordSecretRef == nil {
		out = append(out, generatedSecret{f.PasswordSecret(), ComponentAuth})
	}
	if f.Spec.Invalidation.SigningSecretRef == nil {
		out = append(out, generatedSecret{f.BusSecret(), ComponentAgent})
	}
	return out
}

// buildSecret is the Secret for g holding value.
func buildSecret(f *cachev1alpha1.CacheFleet, g generatedSecret, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: objectMeta(f, g.ref.Name, g.component),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{g.ref.Key: []byte(value)},
	}
}

// randomToken is 32 random bytes, URL-safe base64 without padding: no characters a shell,
// a config file or a URL would need to escape.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
