package e2e

// TCP MD5 on BGP sessions against real FRR: the router requires a password
// on every session with a node.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/e2e/manifests"
)

// The router's password and a wrong one. Distinctive, so that finding
// either in a log, an Event or a metric cannot be a coincidence.
const (
	md5Right = "Md5-right-4f1c9e"
	md5Wrong = "Md5-wrong-7b2d0a"
)

// bgpMD5Config: three BGPPeers for the router, one per node: the first
// with the password inline, the second through a basic-auth Secret, the
// third with a wrong password.
func bgpMD5Config(nodes []*lab.Node) string {
	peer := func(name, node, password string) string {
		return manifests.BGPPeer(manifests.Peer{Name: name, MyASN: manifests.NodeASN, PeerASN: manifests.RouterASN, Address: manifests.RouterIPv4,
			Spec: "  nodeSelectors:\n  - matchLabels:\n      kubernetes.io/hostname: " + node + "\n" + password})
	}
	secret := `apiVersion: v1
kind: Secret
metadata:
  name: tor-md5
  namespace: metallb-system
type: kubernetes.io/basic-auth
stringData:
  password: ` + md5Right + "\n"
	return manifests.Join(manifests.Pool(manifests.FirstPoolRange), manifests.BGPAdvertisement(""), secret,
		peer("tor-inline", nodes[0].Name, "  password: "+md5Right+"\n"),
		peer("tor-secret", nodes[1].Name, "  passwordSecret:\n    name: tor-md5\n    namespace: metallb-system\n"),
		peer("tor-wrong", nodes[2].Name, "  password: "+md5Wrong+"\n"))
}

// TestLabBGPMD5: with the router's password, inline or from a basic-auth
// Secret, sessions come up and carry routes; with a wrong one the session
// stays down, and the user sees it in the speaker's metrics (session down,
// last error) and in a Warning Event on the BGPPeer; fixing the password
// brings it up. No password is ever in a log, an Event or a metric.
func TestLabBGPMD5(t *testing.T) {
	c := startLabCluster(t)
	passwords := map[netip.Addr]string{}
	for _, n := range c.Nodes {
		passwords[n.IPv4] = md5Right
	}
	f := startFRRWith(t, c.Lab, frrOptions{passwords: passwords})

	c.apply(t, "bgp-md5.yaml", bgpMD5Config(c.Nodes))
	c.deployExampleService(t)

	wrongNode := c.Nodes[2]
	metricsAddr := netip.AddrPortFrom(wrongNode.IPv4, 7472)
	var speakers []*lab.Process
	for _, n := range c.Nodes {
		var extra []string
		if n == wrongNode {
			extra = append(extra, "--metrics-bind-address="+metricsAddr.String())
		}
		speakers = append(speakers, startSpeaker(t, c.env.Kubeconfig, n, extra...))
	}

	prefix := netip.MustParsePrefix("172.25.254.50/32")
	right := []string{c.Nodes[0].IPv4.String(), c.Nodes[1].IPv4.String()}
	slices.Sort(right)
	waitNextHops(t, f, prefix, right)

	var metricsText string
	t.Run("wrong password keeps the session down and says so", func(t *testing.T) {
		// A failed connection attempt is what the user sees first.
		out, ok := waitFor(time.Minute, func() (string, bool) {
			body, err := scrape(metricsAddr)
			if err != nil {
				return err.Error(), false
			}
			metricsText = body
			return body, strings.Contains(body, `ironlb_bgp_session_up{peer="tor-wrong"} 0`) &&
				strings.Contains(body, `ironlb_bgp_session_last_error_info{error="`)
		})
		if !ok {
			t.Fatalf("metrics of %s: want tor-wrong down with a last error; last scrape:\n%s", wrongNode.Name, grepLines(out, "ironlb_bgp_"))
		}
		t.Logf("metrics of %s:\n%s", wrongNode.Name, grepLines(metricsText, "ironlb_bgp_session"))
		if !strings.Contains(metricsText, "TCP MD5") {
			t.Errorf("last error of tor-wrong does not point at TCP MD5:\n%s", grepLines(metricsText, "last_error"))
		}
		states, err := f.SessionStates()
		if err != nil {
			t.Fatal(err)
		}
		if st := states[wrongNode.IPv4.String()]; st == "Established" {
			t.Errorf("router's session with %s is %s with a wrong password", wrongNode.Name, st)
		}
		out, ok = waitFor(time.Minute, func() (string, bool) {
			out, err := c.env.Kubectl("get", "events", "-n", "metallb-system", "--field-selector", "involvedObject.name=tor-wrong")
			if err != nil {
				return err.Error(), false
			}
			return out, strings.Contains(out, "BGPSessionDown") && strings.Contains(out, "TCP MD5")
		})
		if !ok {
			t.Errorf("kubectl get events for BGPPeer tor-wrong: want a BGPSessionDown Warning naming TCP MD5, got:\n%s", out)
		} else {
			t.Logf("kubectl get events:\n%s", out)
		}
		if hops, err := f.NextHops(prefix); err != nil || !slices.Equal(hops, right) {
			t.Errorf("next hops %v (%v), want only the nodes with the right password %v", hops, err, right)
		}
	})

	t.Run("fixing the password brings the session up", func(t *testing.T) {
		c.kubectl(t, "patch", "bgppeer", "-n", "metallb-system", "tor-wrong", "--type=merge", "-p", `{"spec":{"password":"`+md5Right+`"}}`)
		var all []string
		for _, n := range c.Nodes {
			all = append(all, n.IPv4.String())
		}
		slices.Sort(all)
		waitNextHops(t, f, prefix, all)
		if body, err := scrape(metricsAddr); err != nil {
			t.Error(err)
		} else if !strings.Contains(body, `ironlb_bgp_session_up{peer="tor-wrong"} 1`) {
			t.Errorf("metrics after the fix: want tor-wrong up:\n%s", grepLines(body, "ironlb_bgp_session"))
		} else {
			metricsText += body
		}
	})

	// Whatever went wrong above, no password leaks.
	events, err := c.env.Kubectl("get", "events", "-A", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	states, err := c.env.Kubectl("get", "configurationstates", "-A", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{"Events": events, "ConfigurationStates": states, "metrics": metricsText}
	for i, p := range speakers {
		places[c.Nodes[i].Name+" speaker log"] = p.Log()
	}
	for where, text := range places {
		for _, pw := range []string{md5Right, md5Wrong} {
			if strings.Contains(text, pw) {
				t.Errorf("password %q appears in the %s", pw, where)
			}
		}
	}
}

// scrape reads a speaker's metrics endpoint.
func scrape(addr netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read metrics of %v: %w", addr, err)
	}
	return string(b), nil
}

// grepLines keeps the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for l := range strings.Lines(text) {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}
