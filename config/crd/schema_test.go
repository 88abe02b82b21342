package crd_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// schemaValidator checks an object against one version of a CRD the way the
// API server does on create (OpenAPI schema, list types, CEL rules), without
// a server: a quick check of the same cases the envtest tests apply.
type schemaValidator struct {
	openAPI    apiservervalidation.SchemaValidator
	structural *structuralschema.Structural
	cel        *cel.Validator
}

func schemaValidators(t *testing.T) map[string]schemaValidator {
	t.Helper()
	out := map[string]schemaValidator{}
	for _, crd := range loadCRDs(t) {
		for _, v := range crd.Spec.Versions {
			var props apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &props, nil); err != nil {
				t.Fatal(err)
			}
			openAPI, _, err := apiservervalidation.NewSchemaValidator(&props)
			if err != nil {
				t.Fatalf("%s %s: %v", crd.Name, v.Name, err)
			}
			s, err := structuralschema.NewStructural(&props)
			if err != nil {
				t.Fatalf("%s %s: %v", crd.Name, v.Name, err)
			}
			out[crd.Spec.Names.Kind+"/"+v.Name] = schemaValidator{
				openAPI:    openAPI,
				structural: s,
				cel:        cel.NewValidator(s, true, celconfig.PerCallLimit),
			}
		}
	}
	return out
}

func (v schemaValidator) validate(t *testing.T, manifest []byte) field.ErrorList {
	t.Helper()
	raw, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	errs := apiservervalidation.ValidateCustomResource(nil, obj, v.openAPI)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func TestSchemaRejects(t *testing.T) {
	validators := schemaValidators(t)
	for _, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := validators[tc.kind+"/"+tc.apiVersion]
			if !ok {
				t.Fatalf("no CRD for %s %s", tc.kind, tc.apiVersion)
			}
			errs := v.validate(t, manifest(tc.apiVersion, tc.kind, objectName(tc.name), "ns", tc.spec))
			if len(errs) == 0 {
				t.Fatalf("accepted: %s", tc.spec)
			}
			got := errs.ToAggregate().Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("error lacks %q: %s", w, got)
				}
			}
		})
	}
}

func TestSchemaAccepts(t *testing.T) {
	validators := schemaValidators(t)
	for _, tc := range acceptances {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := validators[tc.kind+"/"+tc.apiVersion]
			if !ok {
				t.Fatalf("no CRD for %s %s", tc.kind, tc.apiVersion)
			}
			if errs := v.validate(t, manifest(tc.apiVersion, tc.kind, objectName(tc.name), "ns", tc.spec)); len(errs) > 0 {
				t.Errorf("refused a valid object: %v", errs.ToAggregate())
			}
		})
	}
}
