// kstatus reads one Kubernetes object as JSON on stdin and prints what
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute says about it, as JSON:
// {"status": "Current|InProgress|Failed|Terminating|NotFound|Unknown", "message": "...", "conditions": [...]}.
// The e2e/integration tests use it to check the LLM's status against the real kstatus (Flux, cli-utils).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{} // its UnmarshalJSON keeps integers as int64, as the API machinery does
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail(err)
	}
	res, err := status.Compute(obj)
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(map[string]interface{}{
		"status":     res.Status.String(),
		"message":    res.Message,
		"conditions": res.Conditions,
	})
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
