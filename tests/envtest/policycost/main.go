// Command policycost measures what `podtailor policy`'s objects cost in CEL, with the API
// server's own compiler and evaluator (k8s.io/apiserver at the control plane's version): the
// MutatingAdmissionPolicy's mutations run in order on a pod, the pod defaulted after each one
// as the API server does, then the ValidatingAdmissionPolicy's validations on the result.
// Each expression's actual cost is printed beside the limits the API server enforces at
// admission: PerCallLimit for one expression, RuntimeCELCostBudget for one mutation or for
// the validations of one binding.
//
//	policycost POLICY.yaml POD.json
//
// POLICY.yaml is what `podtailor policy` prints; POD.json the pod as the policies see it
// (created in NAMESPACE, defaulted). The answer is one JSON object on stdout:
//
//	{"mutations": [cost, ...], "validations": cost, "max": cost, "perCallLimit": 1000000,
//	 "budget": 10000000, "pod": {the pod after the mutations}}
//
// An expression that fails (its cost limit exceeded, say) is an error naming it, exit 1.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
)

type report struct {
	Mutations    []int64         `json:"mutations"`
	Validations  int64           `json:"validations"`
	Max          int64           `json:"max"`
	PerCallLimit int64           `json:"perCallLimit"`
	Budget       int64           `json:"budget"`
	Pod          json.RawMessage `json:"pod"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: policycost POLICY.yaml POD.json")
		os.Exit(2)
	}
	r, err := measure(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "policycost: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintf(os.Stderr, "policycost: %v\n", err)
		os.Exit(1)
	}
}

// policies reads the mutating and the validating policy of a YAML stream.
func policies(path string) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicy, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var m *admissionregistrationv1.MutatingAdmissionPolicy
	var v *admissionregistrationv1.ValidatingAdmissionPolicy
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(text), 4096)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		var meta metav1.TypeMeta
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		switch meta.Kind {
		case "MutatingAdmissionPolicy":
			m = &admissionregistrationv1.MutatingAdmissionPolicy{}
			err = json.Unmarshal(raw, m)
		case "ValidatingAdmissionPolicy":
			v = &admissionregistrationv1.ValidatingAdmissionPolicy{}
			err = json.Unmarshal(raw, v)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", path, meta.Kind, err)
		}
	}
	if m == nil || v == nil {
		return nil, nil, fmt.Errorf("%s: a MutatingAdmissionPolicy and a ValidatingAdmissionPolicy are expected", path)
	}
	return m, v, nil
}

func variables(vs []admissionregistrationv1.Variable) []plugincel.NamedExpressionAccessor {
	out := make([]plugincel.NamedExpressionAccessor, len(vs))
	for i, v := range vs {
		out[i] = &validating.Variable{Name: v.Name, Expression: v.Expression}
	}
	return out
}

func measure(policyPath, podPath string) (*report, error) {
	mutating, validatingPolicy, err := policies(policyPath)
	if err != nil {
		return nil, err
	}
	text, err := os.ReadFile(podPath)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(text, pod); err != nil {
		return nil, fmt.Errorf("%s: %w", podPath, err)
	}
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	pod.APIVersion, pod.Kind = "v1", "Pod"
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace, Labels: map[string]string{"kubernetes.io/metadata.name": pod.Namespace}}}
	attrs := admission.NewAttributesRecord(pod, nil, gvk, pod.Namespace, pod.Name, gvr, "", admission.Create, &metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "policycost"})
	versioned := &admission.VersionedAttributes{Attributes: attrs, VersionedObject: admission.NewLazyObject(pod), VersionedKind: gvk}
	request := plugincel.CreateAdmissionRequest(attrs, metav1.GroupVersionResource(gvr), metav1.GroupVersionKind(gvk))
	objects := admission.NewObjectInterfacesFromScheme(legacyscheme.Scheme)
	r := &report{PerCallLimit: celconfig.PerCallLimit, Budget: celconfig.RuntimeCELCostBudget}

	// the mutations, as the mutating dispatcher runs them (one composition context a policy)
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return nil, err
	}
	opts := plugincel.OptionalVariableDeclarations{HasPatchTypes: true}
	compiler.CompileAndStoreVariables(variables(mutating.Spec.Variables), opts, environment.StoredExpressions)
	ctx := compiler.CreateContext(context.Background())
	for i, m := range mutating.Spec.Mutations {
		if m.PatchType != admissionregistrationv1.PatchTypeJSONPatch || m.JSONPatch == nil {
			return nil, fmt.Errorf("mutation %d: only JSONPatch mutations are measured", i)
		}
		evaluator := compiler.CompileMutatingEvaluator(&patch.JSONPatchCondition{Expression: m.JSONPatch.Expression}, opts, environment.StoredExpressions)
		if errs := evaluator.CompilationErrors(); len(errs) > 0 {
			return nil, fmt.Errorf("mutation %d: %w", i, errors.Join(errs...))
		}
		result, remaining, err := evaluator.ForInput(ctx, versioned, request, plugincel.OptionalVariableBindings{}, namespace, celconfig.RuntimeCELCostBudget)
		if err == nil {
			err = result.Error
		}
		if err != nil {
			return nil, fmt.Errorf("mutation %d: %w", i, err)
		}
		cost := celconfig.RuntimeCELCostBudget - remaining
		r.Mutations = append(r.Mutations, cost)
		r.Max = max(r.Max, cost)
		patched, err := patch.NewJSONPatcher(evaluator).Patch(ctx, patch.Request{
			MatchedResource: gvr, VersionedAttributes: versioned, ObjectInterfaces: objects, Namespace: namespace,
		}, celconfig.RuntimeCELCostBudget)
		if err != nil {
			return nil, fmt.Errorf("mutation %d: %w", i, err)
		}
		objects.GetObjectDefaulter().Default(patched)
		versioned.UpdateObject(patched)
	}

	// the validations, one budget for the binding
	vcompiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return nil, err
	}
	vopts := plugincel.OptionalVariableDeclarations{}
	vcompiler.CompileAndStoreVariables(variables(validatingPolicy.Spec.Variables), vopts, environment.StoredExpressions)
	accessors := make([]plugincel.ExpressionAccessor, len(validatingPolicy.Spec.Validations))
	for i, v := range validatingPolicy.Spec.Validations {
		accessors[i] = &validating.ValidationCondition{Expression: v.Expression}
	}
	condition := vcompiler.CompileCondition(accessors, vopts, environment.StoredExpressions)
	results, remaining, err := condition.ForInput(vcompiler.CreateContext(context.Background()), versioned, request, plugincel.OptionalVariableBindings{}, namespace, celconfig.RuntimeCELCostBudget)
	if err != nil {
		return nil, fmt.Errorf("validations: %w", err)
	}
	for i, res := range results {
		if res.Error != nil {
			return nil, fmt.Errorf("validation %d: %w", i, res.Error)
		}
	}
	r.Validations = celconfig.RuntimeCELCostBudget - remaining
	if r.Pod, err = json.Marshal(versioned.VersionedObject.Object()); err != nil {
		return nil, err
	}
	return r, nil
}
