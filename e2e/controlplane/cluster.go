package controlplane

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"

	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubernetesServiceIP is the cluster IP of the `kubernetes` Service: the
// first address of the Service range StartWith configures. Pods reach the
// API server there (through kube-proxy), so the serving certificate of a
// real cluster's API server names it.
var KubernetesServiceIP = net.IPv4(10, 96, 0, 1)

// ClusterFiles are the key material a real cluster's components need
// besides their kubeconfigs (Options.Cluster).
type ClusterFiles struct {
	// CAFile is the CA that signed the API server's serving certificate:
	// kube-controller-manager publishes it to every namespace as
	// kube-root-ca.crt, which pods' ServiceAccount volumes carry.
	CAFile string
	// ServiceAccountKeyFile is the private key ServiceAccount tokens are
	// signed with.
	ServiceAccountKeyFile string
	// KubeletClientCAFile is the CA of the client certificate the API server
	// presents to kubelets (logs, exec): kubelets trust it for
	// authentication.
	KubeletClientCAFile string
}

// configureCluster turns envtest's API server into a real cluster's: the
// ServiceAccount admission plugin on (envtest turns it off, since no
// controller creates default ServiceAccounts there), the Node authorizer and
// NodeRestriction for kubelets, and a serving certificate valid for the
// kubernetes Service's cluster IP and names, which pods use. Envtest makes
// its own certificates only when the directory has none, so the whole set
// (serving pair, ServiceAccount signing pair) is written here.
func configureCluster(apiserver *envtest.APIServer, bindAddress, dir string) (ClusterFiles, error) {
	ips := []net.IP{KubernetesServiceIP, net.IPv4(127, 0, 0, 1)}
	if ip := net.ParseIP(bindAddress); ip != nil {
		ips = append(ips, ip)
	}
	names := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("kubernetes", ips, names)
	if err != nil {
		return ClusterFiles{}, fmt.Errorf("generate serving certificate: %w", err)
	}
	// The certificate comes first, then the CA that signed it.
	var ca []byte
	for rest := certPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		ca = pem.EncodeToMemory(block)
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return ClusterFiles{}, fmt.Errorf("generate service account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return ClusterFiles{}, fmt.Errorf("encode service account public key: %w", err)
	}
	kubeletCA, clientCert, clientKey, err := kubeletClientCert()
	if err != nil {
		return ClusterFiles{}, err
	}
	files := ClusterFiles{CAFile: filepath.Join(dir, "ca.crt"), ServiceAccountKeyFile: filepath.Join(dir, "sa-signer.key"),
		KubeletClientCAFile: filepath.Join(dir, "kubelet-client-ca.crt")}
	for name, data := range map[string][]byte{
		"kubelet-client-ca.crt": kubeletCA,
		"kubelet-client.crt":    clientCert,
		"kubelet-client.key":    clientKey,
		"apiserver.crt":         certPEM,
		"apiserver.key":         keyPEM,
		"ca.crt":                ca,
		"sa-signer.key":         pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"sa-signer.crt":         pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return ClusterFiles{}, fmt.Errorf("write %s: %w", name, err)
		}
	}
	apiserver.CertDir = dir
	apiserver.SecureServing.CA = ca
	args := apiserver.Configure()
	args.Disable("disable-admission-plugins")
	args.Set("enable-admission-plugins", "NodeRestriction")
	args.Set("authorization-mode", "Node,RBAC")
	if bindAddress != "" {
		// The kubernetes Service's endpoint, which pods reach through
		// kube-proxy; by default the machine's own address.
		args.Set("advertise-address", bindAddress)
	}
	args.Set("kubelet-client-certificate", filepath.Join(dir, "kubelet-client.crt"))
	args.Set("kubelet-client-key", filepath.Join(dir, "kubelet-client.key"))
	return files, nil
}

// kubeletClientCert makes a CA and the API server's client certificate
// signed by it, PEM encoded.
func kubeletClientCert() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate kubelet client CA key: %w", err)
	}
	ca, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "kubelet-client-ca"}, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubelet client CA: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate kubelet client key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"kubeadm:cluster-admins"}},
		NotBefore:    ca.NotBefore,
		NotAfter:     ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sign kubelet client certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
}

// UserKubeconfig writes a kubeconfig for a user authenticated by a client
// certificate (user name and groups as the certificate says) and returns
// its path: how the cluster's components (system:node:node1 in
// system:nodes, system:kube-scheduler, ...) log in, each with only what RBAC
// and the Node authorizer give it.
func (e *Env) UserKubeconfig(name string, groups ...string) (string, error) {
	user, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return "", fmt.Errorf("add user %s: %w", name, err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("render kubeconfig of %s: %w", name, err)
	}
	path := filepath.Join(e.dir, strings.ReplaceAll(name, ":", "-")+".kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig of %s: %w", name, err)
	}
	return path, nil
}
