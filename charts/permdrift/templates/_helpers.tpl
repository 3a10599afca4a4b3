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
{{- $api := .Values.api }}
{{- if $api.enabled }}
{{- if eq (int $api.port) (int .Values.http.port) }}
{{- fail (printf "api.port and http.port are both %d: the API needs a port of its own" (int $api.port)) }}
{{- end }}
{{- if and $api.tls.certManager.enabled (not $api.tls.certManager.issuerRef.name) }}
{{- fail "api.tls.certManager.enabled needs api.tls.certManager.issuerRef.name (the Issuer or ClusterIssuer that signs the API's certificate)" }}
{{- end }}
{{- if and $api.tls.secretName (not $api.tls.certManager.enabled) $api.tls.hosts }}
{{- fail "api.tls.hosts names the hosts of a generated or cert-manager certificate; with api.tls.secretName alone the Secret's certificate names them: drop api.tls.hosts or enable api.tls.certManager" }}
{{- end }}
{{- $ids := dict }}
{{- range $i, $k := $api.authentication.keys }}
{{- if hasKey $ids $k.id }}
{{- fail (printf "api.authentication.keys[%d].id: %q is used by more than one key" $i $k.id) }}
{{- end }}
{{- $_ := set $ids $k.id true }}
{{- end }}
{{- range $i, $n := .Values.rbac.baselineAcceptor.resourceNames }}
{{- if not (hasKey $names $n) }}
{{- fail (printf "rbac.baselineAcceptor.resourceNames[%d]: %q is not the name of a source" $i $n) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Service's DNS names, which clients in the cluster reach the API by.
*/}}
{{- define "permdrift.serviceHosts" -}}
{{- $svc := include "permdrift.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) }}
{{- end }}

{{/*
The names of the API's certificate when the chart decides them (generated or
cert-manager): api.tls.hosts, else the Service's DNS names.
*/}}
{{- define "permdrift.apiHosts" -}}
{{- if .Values.api.tls.hosts }}
{{- toJson .Values.api.tls.hosts }}
{{- else }}
{{- include "permdrift.serviceHosts" . }}
{{- end }}
{{- end }}

{{/*
The Secret holding the API's certificate: api.tls.secretName, else (with
cert-manager) FULLNAME-api-tls; empty when the operator generates its own.
*/}}
{{- define "permdrift.apiTlsSecret" -}}
{{- if .Values.api.tls.secretName }}
{{- .Values.api.tls.secretName }}
{{- else if .Values.api.tls.certManager.enabled }}
{{- include "permdrift.fullname" . }}-api-tls
{{- else if .Values.webhook.enabled }}
{{- /* the chart's generated CA and certificate (templates/webhook.yaml) */}}
{{- include "permdrift.fullname" . }}-webhook-tls
{{- end }}
{{- end }}

{{/*
Whether the operator asks this cluster's TokenReview and SubjectAccessReview:
"true" or "". tokenReview auto is on here, since the operator runs in a cluster.
*/}}
{{- define "permdrift.tokenReview" -}}
{{- if and .Values.api.enabled (ne (include "permdrift.tokenReviewMode" .) "off") }}true{{ end }}
{{- end }}

{{/*
api.authentication.tokenReview as the operator reads it: auto, on or off. An
unquoted on/off in a values file reaches the chart as a YAML 1.1 boolean.
*/}}
{{- define "permdrift.tokenReviewMode" -}}
{{- $t := .Values.api.authentication.tokenReview }}
{{- if kindIs "bool" $t }}{{ ternary "on" "off" $t }}{{ else }}{{ $t }}{{ end }}
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
{{- if and $.Values.webhook.enabled (eq .name $.Values.webhook.source) }}
{{- $w := $.Values.webhook }}
{{- $_ := set $s "admission" (dict "mode" $w.mode "minSeverity" $w.minSeverity "exempt" $w.exempt) }}
{{- end }}
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
{{- $http := dict "listen" (printf "0.0.0.0:%d" (int .Values.http.port)) }}
{{- /* limits: only the keys given (the schema admits the contract's four); the operator's defaults fill in the rest */}}
{{- with .Values.http.limits }}{{ $_ := set $http "limits" . }}{{ end }}
{{- $api := dict "enabled" .Values.api.enabled }}
{{- if .Values.api.enabled }}
{{- $_ := set $api "listen" (printf "0.0.0.0:%d" (int .Values.api.port)) }}
{{- if include "permdrift.apiTlsSecret" . }}
{{- $_ := set $api "tls" (dict "certFile" "/etc/permdrift-tls/tls.crt" "keyFile" "/etc/permdrift-tls/tls.key") }}
{{- else }}
{{- $_ := set $api "tls" (dict "hosts" (include "permdrift.apiHosts" . | fromJsonArray)) }}
{{- end }}
{{- $keys := list }}
{{- range .Values.api.authentication.keys }}
{{- $keys = append $keys (dict "id" .id "publicKey" .publicKey) }}
{{- end }}
{{- $_ := set $api "authentication" (dict "tokenReview" (include "permdrift.tokenReviewMode" .) "keys" $keys) }}
{{- with .Values.api.limits }}{{ $_ := set $api "limits" . }}{{ end }}
{{- end }}
{{ toYaml (dict "http" $http) }}
{{ toYaml (dict "api" $api) }}
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
