{{/*
Names and labels.
*/}}
{{- define "permdrift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "permdrift.fullname" -}}
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

{{- define "permdrift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "permdrift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "permdrift.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "permdrift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: permdrift
{{- end }}

{{- define "permdrift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "permdrift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "permdrift.leaseName" -}}
{{- default (include "permdrift.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "permdrift.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The store's claim: an existing one, the chart's own, or none (emptyDir).
*/}}
{{- define "permdrift.claimName" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else }}
{{- include "permdrift.fullname" . }}-store
{{- end }}
{{- end }}

{{/*
Cross-field checks the schema cannot express. Fails the render with a message
that names the value to fix.
*/}}
{{- define "permdrift.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: true (only the leader may write the store)" }}
{{- end }}
{{- $names := dict }}
{{- range $i, $s := .Values.sources }}
{{- if hasKey $names $s.name }}
{{- fail (printf "sources[%d].name: %q is used by more than one source" $i $s.name) }}
{{- end }}
{{- $_ := set $names $s.name true }}
{{- if and $s.kubernetes $s.kubernetes.inCluster (eq (default $.Values.mode $s.mode) "enforce") (ne $.Values.mode "enforce") }}
{{- fail (printf "sources[%d] (%s) is in enforce mode on this cluster, but mode: detect gives the operator read-only RBAC; set mode: enforce" $i $s.name) }}
{{- end }}
{{- end }}
{{- range $i, $a := .Values.allow }}
{{- if and $a.source (not (hasKey $names $a.source)) }}
{{- fail (printf "allow[%d].source: %q is not the name of a source" $i $a.source) }}
{{- end }}
{{- end }}
{{- if and (ne .Values.persistence.existingClaim "") (not .Values.persistence.enabled) }}
{{- fail "persistence.existingClaim is set but persistence.enabled is false" }}
{{- end }}
{{- end }}

{{/*
The operator's configuration file, exactly the format of docs/operator.md.
Values are copied field by field so that nothing the operator does not know
(it rejects unknown fields) can reach it.
*/}}
{{- define "permdrift.config" -}}
{{- $sources := list }}
{{- range .Values.sources }}
{{- $s := dict "name" .name "mode" (default $.Values.mode .mode) }}
{{- if .kubernetes }}
{{- $k := dict "inCluster" (default false .kubernetes.inCluster) }}
{{- with .kubernetes.context }}{{ $_ := set $k "context" . }}{{ end }}
{{- with .kubernetes.kubeconfig }}{{ $_ := set $k "kubeconfig" . }}{{ end }}
{{- $_ := set $s "kubernetes" $k }}
{{- else }}
{{- /* the schema admits only the contract's keys: profile, region, endpointUrl, assumeRole, pollInterval */}}
{{- $a := dict }}
{{- range $key, $val := .aws }}
{{- if $val }}{{ $_ := set $a $key $val }}{{ end }}
{{- end }}
{{- $_ := set $s "aws" $a }}
{{- end }}
{{- $sources = append $sources $s }}
{{- end }}
{{- /* the schema admits only the contract's keys: name, reason, source, subject, object, risks */}}
{{- $allow := list }}
{{- range .Values.allow }}
{{- $r := dict }}
{{- range $key, $val := . }}
{{- if $val }}{{ $_ := set $r $key $val }}{{ end }}
{{- end }}
{{- $allow = append $allow $r }}
{{- end }}
{{- /* Sections in the order of docs/operator.md. */ -}}
apiVersion: permdrift.dev/v1alpha1
kind: Config
{{ toYaml (dict "store" (dict "path" .Values.store.path)) }}
{{ toYaml (dict "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.http.port)))) }}
{{ toYaml (dict "leaderElection" (dict
    "enabled" .Values.leaderElection.enabled
    "namespace" .Release.Namespace
    "leaseName" (include "permdrift.leaseName" .)
    "leaseDuration" .Values.leaderElection.leaseDuration
    "renewDeadline" .Values.leaderElection.renewDeadline
    "retryPeriod" .Values.leaderElection.retryPeriod)) }}
{{ toYaml (dict "sources" $sources) }}
{{ toYaml (dict "allow" $allow) }}
{{ toYaml (dict "events" (dict "enabled" .Values.events.enabled)) }}
{{ toYaml (dict "logging" (dict "format" .Values.logging.format "level" .Values.logging.level)) }}
{{- end }}

{{/*
A Prometheus duration ("90s", "15m", "1h", "2d", "1w") in seconds, for
comparisons with Unix timestamps in PromQL.
*/}}
{{- define "permdrift.seconds" -}}
{{- $d := . | toString }}
{{- $n := regexFind "^[0-9]+" $d | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $d "" }}
{{- $mult := get (dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800) $unit }}
{{- if not $mult }}{{ fail (printf "%q: use a duration in s, m, h, d or w" $d) }}{{ end }}
{{- mul $n $mult }}
{{- end }}

{{/*
A metric selector with prometheusRule.metricSelector added: "name" or "name{sel}".
*/}}
{{- define "permdrift.metric" -}}
{{- $sel := .root.Values.prometheusRule.metricSelector }}
{{- if $sel }}{{ printf "%s{%s}" .name $sel }}{{ else }}{{ .name }}{{ end }}
{{- end }}
