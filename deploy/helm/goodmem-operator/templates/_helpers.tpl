{{- define "goodmem-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "goodmem-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "goodmem-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "goodmem-operator.secretName" -}}
{{- .Values.registry.apiKey.existingSecret | default (printf "%s-registry" (include "goodmem-operator.fullname" .)) -}}
{{- end -}}

{{/* Exactly what the operator uses; the same rules as deploy/overlays/cluster-wide/clusterrole.yaml
     (tests/unit/test_deploy.py keeps them equal). */}}
{{- define "goodmem-operator.rules" -}}
- apiGroups: ["goodmem.ai"]
  resources: ["llms"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["goodmem.ai"]
  resources: ["llms/status"]
  verbs: ["patch"]
- apiGroups: ["goodmem.ai"]
  resources: ["goodmemconnections"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["goodmem.ai"]
  resources: ["goodmemconnections/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Only in the ClusterRole (the same as the last rules of deploy/overlays/cluster-wide/clusterrole.yaml): watching
     every namespace, one stream each (namespaces, CRDs), and the cluster-scoped ClusterGoodMemConnections. */}}
{{- define "goodmem-operator.clusterRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: ["goodmem.ai"]
  resources: ["clustergoodmemconnections"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["goodmem.ai"]
  resources: ["clustergoodmemconnections/status"]
  verbs: ["patch"]
{{- end -}}

{{/* Leader election, in the release's namespace: the same rules as deploy/base/leader-election-role.yaml, the
     Lease named after the release (GOODMEM_LEASE_NAME). */}}
{{- define "goodmem-operator.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "goodmem-operator.fullname" . | quote }}]
  verbs: ["get", "update"]
{{- end -}}
