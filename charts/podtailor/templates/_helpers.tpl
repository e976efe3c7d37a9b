{{/* The label every object carries and the selectors match, as in manifests/base. */}}
{{- define "podtailor.labels" -}}
app.kubernetes.io/name: podtailor
{{- end }}

{{/* The worker template: the value, else the chart's copy of examples/template.yaml; it must
be a Pod manifest (podtailor refuses to start on anything else, so the install fails here). */}}
{{- define "podtailor.template" -}}
{{- $text := .Values.template | default (.Files.Get "files/template.yaml") -}}
{{- $pod := fromYaml $text -}}
{{- if hasKey $pod "Error" -}}
{{- fail (printf "template: not YAML: %s" (get $pod "Error")) -}}
{{- end -}}
{{- if or (ne (get $pod "apiVersion" | toString) "v1") (ne (get $pod "kind" | toString) "Pod") -}}
{{- fail "template: must be a Pod manifest (apiVersion: v1, kind: Pod)" -}}
{{- end -}}
{{- $text -}}
{{- end }}

{{/* The serving certificate's Certificate, which cert-manager's CA injector reads. */}}
{{- define "podtailor.servingCertificate" -}}
{{ .Release.Namespace }}/podtailor-serving
{{- end }}

{{/* Values that contradict each other fail the render, naming the values. */}}
{{- define "podtailor.check" -}}
{{- if and (eq .Values.certificates.mode "certManager") .Values.certificates.caBundle -}}
{{- fail "certificates.caBundle is for certificates.mode=secret: with certManager, cert-manager's CA injector sets the webhooks' caBundle" -}}
{{- end -}}
{{- end }}
