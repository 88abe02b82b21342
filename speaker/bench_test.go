package speaker

import (
	"fmt"
	"testing"

	"go4.org/netipx"

	"github.com/ironlb/ironlb/internal/policy"
)

// BenchmarkDesired is one full recomputation, what every change and every
// failover costs a speaker, for 10,000 Services on 3 and 50 nodes.
func BenchmarkDesired(b *testing.B) {
	for _, nodes := range []int{3, 50} {
		b.Run(fmt.Sprintf("services=10000/nodes=%d", nodes), func(b *testing.B) {
			in := largeInputs(10000, nodes)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				in.Node = "n1"
				if len(Desired(in)) == 0 {
					b.Fatal("n1 announces nothing")
				}
			}
		})
	}
}

func largeInputs(services, nodes int) Inputs {
	cfg := testConfig(ad("l2", []string{"big"}))
	cfg.Pools["big"] = &policy.Pool{Name: "big", Ranges: []netipx.IPRange{netipx.MustParseIPRange("10.100.0.0-10.100.255.255")}}
	in := Inputs{Config: cfg}
	for i := range nodes {
		name := fmt.Sprintf("n%d", i+1)
		in.Nodes = append(in.Nodes, node(name))
		in.Alive = append(in.Alive, name)
	}
	for i := range services {
		name := fmt.Sprintf("svc%d", i)
		in.Services = append(in.Services, service("default", name, fmt.Sprintf("10.100.%d.%d", i/256, i%256)))
		in.Slices = append(in.Slices, slice("default", name, ep{node: fmt.Sprintf("n%d", i%nodes+1)}))
	}
	return in
}
