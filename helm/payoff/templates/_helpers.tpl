{{/* Chart name, 63 characters at most. */}}
{{- define "payoff.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: release name + chart name, unless one contains the other. */}}
{{- define "payoff.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a component's resources: <fullname>-<component>. Call with (list . "ingest"). */}}
{{- define "payoff.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "payoff.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "payoff.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods. Call with (list . "ingest"). */}}
{{- define "payoff.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "payoff.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Standard labels of a component's resources. Call with (list . "ingest"). */}}
{{- define "payoff.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "payoff.chart" $root }}
{{ include "payoff.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: payoff
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of resources that belong to no single component. */}}
{{- define "payoff.commonLabels" -}}
helm.sh/chart: {{ include "payoff.chart" . }}
app.kubernetes.io/name: {{ include "payoff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payoff
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "payoff.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "payoff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payoff.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "payoff.secretName" -}}
{{- default (printf "%s-secrets" (include "payoff.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "payoff.configName" -}}
{{- printf "%s-config" (include "payoff.fullname" .) }}
{{- end }}

{{/*
Checks across values that the JSON schema cannot express; fails the render with the
reason. Included by the ConfigMap, which every release renders.
*/}}
{{- define "payoff.validate" -}}
{{- $v := .Values }}
{{- if and $v.attributor.enabled (gt (int $v.attributor.replicas) (int $v.kafka.partitions)) }}
{{- fail (printf "attributor.replicas (%d) exceeds kafka.partitions (%d): each partition is owned by one instance, extra instances would stay idle" (int $v.attributor.replicas) (int $v.kafka.partitions)) }}
{{- end }}
{{- if and $v.ledger.enabled (gt (int $v.ledger.replicas) (int $v.kafka.partitions)) }}
{{- fail (printf "ledger.replicas (%d) exceeds kafka.partitions (%d): each partition is owned by one instance, extra instances would stay idle" (int $v.ledger.replicas) (int $v.kafka.partitions)) }}
{{- end }}
{{- $ingestNeeds := add (int $v.ingest.preStopSleepSeconds) (mul 2 (int $v.ingest.drainTimeoutSeconds)) }}
{{- if le (int $v.ingest.terminationGracePeriodSeconds) (int $ingestNeeds) }}
{{- fail (printf "ingest.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + 2 x drainTimeoutSeconds (%d): ingest drains requests, then flushes its producer, each within the drain timeout" (int $v.ingest.terminationGracePeriodSeconds) (int $ingestNeeds)) }}
{{- end }}
{{- if le (int $v.attributor.terminationGracePeriodSeconds) (int $v.attributor.drainTimeoutSeconds) }}
{{- fail (printf "attributor.terminationGracePeriodSeconds (%d) must exceed attributor.drainTimeoutSeconds (%d)" (int $v.attributor.terminationGracePeriodSeconds) (int $v.attributor.drainTimeoutSeconds)) }}
{{- end }}
{{- if le (int $v.ledger.terminationGracePeriodSeconds) (int $v.ledger.drainTimeoutSeconds) }}
{{- fail (printf "ledger.terminationGracePeriodSeconds (%d) must exceed ledger.drainTimeoutSeconds (%d)" (int $v.ledger.terminationGracePeriodSeconds) (int $v.ledger.drainTimeoutSeconds)) }}
{{- end }}
{{- if and $v.ingest.autoscaling.enabled (gt (int $v.ingest.autoscaling.minReplicas) (int $v.ingest.autoscaling.maxReplicas)) }}
{{- fail "ingest.autoscaling.minReplicas exceeds maxReplicas" }}
{{- end }}
{{- if not $v.secrets.existingSecret }}
{{- $keys := fromJson $v.secrets.apiKeys }}
{{- if or (hasKey $keys "Error") (not (hasKey $keys "keys")) }}
{{- fail "secrets.apiKeys must be the JSON key file {\"keys\": [...]} (services/runtime/src/auth.rs)" }}
{{- end }}
{{- end }}
{{- if and $v.ingest.tls.enabled (not $v.ingest.tls.secretName) }}
{{- fail "ingest.tls.enabled needs ingest.tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $v.ledger.tls.enabled (not $v.ledger.tls.secretName) }}
{{- fail "ledger.tls.enabled needs ledger.tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every payoff pod. Call with (list . $component). */}}
{{- define "payoff.podCommon" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
serviceAccountName: {{ include "payoff.serviceAccountName" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Environment every service container gets from the chart's ConfigMap. */}}
{{- define "payoff.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "payoff.configName" . }}
{{- end }}

{{/* The timing fields of a probe from its values (other keys are the chart's own). */}}
{{- define "payoff.probeTiming" -}}
{{- $out := dict -}}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "successThreshold" "failureThreshold" -}}
{{- if hasKey $ $key }}{{ $_ := set $out $key (index $ $key) }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end }}
