{{/*
Object names are fixed, as in deploy/ironlb.yaml: ironlb runs once per
cluster (it owns the metallb.io CRDs and cluster-wide roles), and fixed
names let the chart adopt, or hand back, what `kubectl apply` created.
*/}}

{{/* Helm's labels, on every object the chart renders. The chart test
leaves exactly these out when it compares the chart with config/. */}}
{{- define "ironlb.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* A role's pod selector, also its pods' and workload's labels as in
config/manager. Immutable once installed, so never Helm's labels. */}}
{{- define "ironlb.selector" -}}
app.kubernetes.io/name: ironlb
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "ironlb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
