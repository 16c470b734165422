// Reads NetworkPath records, one JSON object per line, and decodes each the
// way the system-probe's Go client does: encoding/json into structs with the
// field names, Go types and omitempty options of its payload.NetworkPath.
// Prints one line per record: {"error": "..."} when decoding fails, else
// {"decoded": <the struct encoded again>}. The Rust test compares that with
// what the agent sent (tests/go_client.rs).
package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
)

type Interface struct {
	Name         string `json:"name"`
	HardwareAddr string `json:"hardware_addr"`
}

type Via struct {
	Interface Interface `json:"interface"`
}

type Source struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	Hostname    string `json:"hostname"`
	Via         *Via   `json:"via,omitempty"`
	NetworkID   string `json:"network_id,omitempty"`
	Service     string `json:"service,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	PublicIP    string `json:"public_ip,omitempty"`
}

type Destination struct {
	Hostname string `json:"hostname"`
	Port     uint16 `json:"port"`
	Service  string `json:"service,omitempty"`
}

type RttStats struct {
	Avg float64 `json:"avg"`
	Min float64 `json:"min"`
	Max float64 `json:"max"`
}

type E2eProbe struct {
	RTTs                 []float64 `json:"rtts"`
	PacketsSent          int       `json:"packets_sent"`
	PacketsReceived      int       `json:"packets_received"`
	PacketLossPercentage float32   `json:"packet_loss_percentage"`
	Jitter               float64   `json:"jitter"`
	RTT                  RttStats  `json:"rtt"`
}

type HopCount struct {
	Avg float64 `json:"avg"`
	Min int     `json:"min"`
	Max int     `json:"max"`
}

type Hop struct {
	TTL        int      `json:"ttl"`
	IPAddress  net.IP   `json:"ip_address"`
	ReverseDNS []string `json:"reverse_dns,omitempty"`
	RTT        float64  `json:"rtt,omitempty"`
	Reachable  bool     `json:"reachable"`
}

type RunSource struct {
	IPAddress net.IP `json:"ip_address"`
	Port      uint16 `json:"port"`
}

type RunDestination struct {
	IPAddress  net.IP   `json:"ip_address"`
	Port       uint16   `json:"port"`
	ReverseDNS []string `json:"reverse_dns,omitempty"`
}

type Run struct {
	RunID       string         `json:"run_id"`
	Source      RunSource      `json:"source"`
	Destination RunDestination `json:"destination"`
	Hops        []Hop          `json:"hops"`
}

type Traceroute struct {
	Runs     []Run    `json:"runs"`
	HopCount HopCount `json:"hop_count"`
}

type NetworkPath struct {
	Timestamp      int64       `json:"timestamp"`
	AgentVersion   string      `json:"agent_version"`
	Namespace      string      `json:"namespace"`
	TestConfigID   string      `json:"test_config_id"`
	TestConfigName string      `json:"test_config_name,omitempty"`
	TestResultID   string      `json:"test_result_id"`
	TestRunID      string      `json:"test_run_id"`
	Origin         string      `json:"origin"`
	TestRunType    string      `json:"test_run_type"`
	SourceProduct  string      `json:"source_product"`
	CollectorType  string      `json:"collector_type"`
	Protocol       string      `json:"protocol"`
	Source         Source      `json:"source"`
	Destination    Destination `json:"destination"`
	Traceroute     Traceroute  `json:"traceroute"`
	E2eProbe       E2eProbe    `json:"e2e_probe"`
	Tags           []string    `json:"tags,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var path NetworkPath
		if err := json.Unmarshal(in.Bytes(), &path); err != nil {
			out.Encode(map[string]string{"error": err.Error()})
			continue
		}
		out.Encode(map[string]NetworkPath{"decoded": path})
	}
}
