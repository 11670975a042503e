{{/*
Names. Object names are <fullname>-<component> and <fullname>-slot-<hospital>;
fullname is capped at 30 characters so that, with a 20-character hospital id,
every Service name stays a valid 63-character DNS label.
*/}}
{{- define "jyt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{- define "jyt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jyt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "jyt.labels" -}}
helm.sh/chart: {{ include "jyt.chart" . }}
app.kubernetes.io/name: {{ include "jyt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jyt
{{- end -}}

{{- define "jyt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jyt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Selector labels of one workload. Args: dict root, component, hospital ("" for
city-wide services).
*/}}
{{- define "jyt.workloadSelector" -}}
{{ include "jyt.selectorLabels" .root }}
{{ include "jyt.componentLabels" . }}
{{- end -}}

{{/* The labels that tell one workload from another within a release. */}}
{{- define "jyt.componentLabels" -}}
app.kubernetes.io/component: {{ .component }}
{{- if .hospital }}
jyt.example/hospital: {{ .hospital }}
{{- end }}
{{- end -}}

{{/* Image of one service. Args: dict root, service. */}}
{{- define "jyt.image" -}}
{{- $i := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $i.tag -}}
{{- if $i.registry -}}
{{- printf "%s/%s/%s:%s" $i.registry $i.repository .service $tag -}}
{{- else -}}
{{- printf "%s/%s:%s" $i.repository .service $tag -}}
{{- end -}}
{{- end -}}

{{/* slot-inventory -> JYT_SLOT_INVENTORY, as jyt-settings builds it. */}}
{{- define "jyt.envPrefix" -}}
{{- printf "JYT_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* A TOML string (JSON string escapes are valid TOML basic-string escapes). */}}
{{- define "jyt.tomlString" -}}
{{- toJson (toString .) -}}
{{- end -}}

{{/* Redis Secret name and key. */}}
{{- define "jyt.redisSecretName" -}}
{{- default (printf "%s-redis" (include "jyt.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{/*
PostgreSQL Secret of a service or hospital. Args: dict root, name (object
name, e.g. jyt-card-issuing or jyt-slot-pumch), postgres (values block).
*/}}
{{- define "jyt.postgresSecretName" -}}
{{- default (printf "%s-postgres" .name) .postgres.existingSecret -}}
{{- end -}}

{{/*
Internal tokens (X-Internal-Token). The key of one audience (card-issuing,
slot-inventory:<hospital>) derived from the master secret, as
jyt_signing::internal::derive_key computes it: hex(SHA-256(master ":"
audience)). Empty when the master is not in values (the Secrets are then
managed outside the chart). Args: dict master, audience.
*/}}
{{- define "jyt.internalKey" -}}
{{- if .master -}}
{{- printf "%s:%s" .master .audience | sha256sum -}}
{{- end -}}
{{- end -}}

{{/*
Environment variables one service gets beyond the common ones, as YAML list
items. The gateway (and gateway-search): the master secret from
<fullname>-gateway-internal-auth, the token lifetime, the trusted proxies
and, when `helm test` is enabled, the test's channel app (its secret from
the Secret the test pod reads too, jyt.testApp.secretName). card-issuing and each slot-inventory: their own derived key from
their own Secret (<name>-internal-auth, key secret), and an empty master,
which drops the demo master of their built-in defaults; so a hospital's pod
holds neither the master nor another hospital's key. channel-accounting
(when the gateway is enabled), from its own Secret: the gateway-ops key
(key secret), with which it mints the tokens of the gateway's operators'
relay (/ops/v1), and its own key (key internal_auth), with which its survey
door (/internal/v1/surveys) checks the gateway's calls; an empty master.
Args: dict root, service, secretName (the Secret holding this pod's key).
*/}}
{{- define "jyt.serviceEnv" -}}
{{- $v := .root.Values -}}
{{- $prefix := include "jyt.envPrefix" .service -}}
{{- if eq .service "gateway" }}
- name: {{ $prefix }}__INTERNAL_AUTH__MASTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: master-secret
- name: {{ $prefix }}__INTERNAL_AUTH__TOKEN_LIFETIME_SECONDS
  value: {{ $v.internalAuth.tokenLifetimeSeconds | int | quote }}
# Peers whose X-Client-Address is believed (gateway.trustedProxies).
- name: {{ $prefix }}__LIMITS__TRUSTED_PROXIES
  value: {{ join "," (default list $v.gateway.trustedProxies) | quote }}
{{- if include "jyt.testApp.enabled" .root }}
{{- $appPrefix := printf "%s__CHANNEL_APPS__%s" $prefix (upper $v.tests.channelApp.id) }}
# The channel app `helm test` signs with (tests.channelApp).
- name: {{ $appPrefix }}__CHANNEL
  value: {{ $v.tests.channelApp.channel | quote }}
- name: {{ $appPrefix }}__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "jyt.testApp.secretName" .root }}
      key: secret
{{- end }}
{{- else if has .service (list "card-issuing" "slot-inventory") }}
- name: {{ $prefix }}__INTERNAL_AUTH__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: secret
- name: {{ $prefix }}__INTERNAL_AUTH__MASTER_SECRET
  value: ""
{{- else if and (eq .service "channel-accounting") $v.gateway.enabled }}
- name: {{ $prefix }}__GATEWAY__OPS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: secret
- name: {{ $prefix }}__INTERNAL_AUTH__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: internal_auth
- name: {{ $prefix }}__INTERNAL_AUTH__MASTER_SECRET
  value: ""
{{- end }}
{{- end -}}

{{/* The sections every service's config file shares. Args: dict root, cfg, redis (bool). */}}
{{- define "jyt.config.common" -}}
{{- $v := .root.Values -}}
[http]
# Listen on every interface: the pod network, not loopback.
host = "0.0.0.0"
port = {{ .cfg.port | int }}
# /metrics, /healthz and /readyz, only there (Prometheus, kubelet probes).
ops_port = {{ $v.opsPort | int }}
workers = {{ .cfg.workers | int }}
max_body_bytes = {{ .cfg.maxBodyBytes | int }}
{{- if .redis }}

[redis]
# urls come from the Secret, as JYT_<SERVICE>__REDIS__URLS.
cluster = {{ $v.redis.cluster }}
key_prefix = {{ include "jyt.tomlString" $v.redis.keyPrefix }}
{{- if $v.redis.responseTimeoutMs }}
response_timeout_ms = {{ $v.redis.responseTimeoutMs | int }}
{{- end }}
{{- if $v.redis.connectionTimeoutMs }}
connection_timeout_ms = {{ $v.redis.connectionTimeoutMs | int }}
{{- end }}
{{- end }}

[telemetry]
log_format = {{ include "jyt.tomlString" $v.telemetry.logFormat }}
log_filter = {{ include "jyt.tomlString" $v.telemetry.logFilter }}
# The OTLP endpoint arrives as OTEL_EXPORTER_OTLP_ENDPOINT (pod env).
{{- end -}}

{{/*
The gateway's own sections: [upstream], where card-issuing answers and the
public FHIR address. The hospital registry is jyt.config.registry, kept
apart so its checksum is too (see templates/services.yaml).
*/}}
{{- define "jyt.config.gateway" -}}
{{- $fullname := include "jyt.fullname" . -}}
[upstream]
timeout_ms = {{ .Values.gateway.upstream.timeoutMs | int }}
connect_timeout_ms = {{ .Values.gateway.upstream.connectTimeoutMs | int }}
pool_max_idle_per_host = {{ .Values.gateway.upstream.poolMaxIdlePerHost | int }}
{{- if .Values.cardIssuing.enabled }}

[card_issuing]
base_url = {{ include "jyt.tomlString" (printf "http://%s-card-issuing:%d" $fullname (.Values.cardIssuing.port | int)) }}
{{- end }}
{{- if .Values.channelAccounting.enabled }}

[channel_accounting]
# Post-visit surveys (/v1/surveys): channel-accounting's survey door.
base_url = {{ include "jyt.tomlString" (printf "http://%s-channel-accounting:%d" $fullname (.Values.channelAccounting.port | int)) }}
{{- end }}
{{- with .Values.gateway.publicBaseUrl }}

[fhir]
# Where aggregators reach the gateway: the FHIR manifest lists files under it.
public_base_url = {{ include "jyt.tomlString" . }}
{{- end }}
{{- end -}}

{{/*
The gateway's hospital registry: hospital id -> its slot-inventory's
Service (short names, so the same manifests work in any namespace), name,
district and level. Only `hospitals` values feed it: a hospital's replicas,
resources, database or extraConfig never change it.
*/}}
{{- define "jyt.config.registry" -}}
{{- $fullname := include "jyt.fullname" . -}}
{{- $port := .Values.slotInventory.port | int -}}
{{- range $h := .Values.hospitals }}

[hospitals.{{ $h.id }}]
name = {{ include "jyt.tomlString" $h.name }}
base_url = {{ include "jyt.tomlString" (printf "http://%s-slot-%s:%d" $fullname $h.id $port) }}
district = {{ include "jyt.tomlString" $h.district }}
level = {{ include "jyt.tomlString" $h.level }}
{{- end }}
{{- end -}}

{{/*
The config file of a city-wide service. Args: dict root, service (e.g.
card-issuing), cfg (its values; for gateway-search the gateway's merged with
gatewaySearch), where (the values key, for messages), registry (the
gateway's: jyt.config.registry, rendered once by services.yaml).
*/}}
{{- define "jyt.config.service" -}}
{{- $cfg := .cfg -}}
{{- $config := include "jyt.config.common" (dict "root" .root "cfg" $cfg "redis" $cfg.redis.enabled) -}}
{{- if $cfg.postgres.enabled -}}
{{- $config = printf "%s\n\n[postgres]\n# url comes from the Secret, as %s__POSTGRES__URL.\npool_max_size = %d" $config (include "jyt.envPrefix" .service) ($cfg.postgres.poolMaxSize | int) -}}
{{- end -}}
{{- if eq .service "gateway" -}}
{{- $config = printf "%s\n\n%s%s" $config (include "jyt.config.gateway" .root) (default "" .registry) -}}
{{- end -}}
{{- if and (eq .service "channel-accounting") .root.Values.gateway.enabled -}}
{{- $config = printf "%s\n\n[gateway]\n# The gateway's operators' relay (/ops/v1); ops_key comes from the Secret.\nurl = %s" $config (include "jyt.tomlString" (printf "http://%s-gateway:%d" (include "jyt.fullname" .root) (.root.Values.gateway.port | int))) -}}
{{- end -}}
{{- with $cfg.extraConfig -}}
{{- $reserved := ternary (list "hospitals" "channel_apps") (list) (eq $.service "gateway") -}}
{{- include "jyt.checkExtraConfig" (dict "where" (printf "%s.extraConfig" $.where) "extra" . "rendered" $config "reserved" $reserved) -}}
{{- $config = printf "%s\n\n%s" $config (trim .) -}}
{{- end -}}
{{- $config -}}
{{- end -}}

{{/*
extraConfig is raw TOML appended to a config file the chart renders; stop
with a message naming the value when it would break that file or take over
what values already set: it must start with a [section] header (keys before
one would land in the chart's last section), and may not repeat a section
the chart renders (TOML refuses a table defined twice, so the service would
not start) nor use a reserved one. Renders nothing.
Args: dict where (e.g. hospitals[2] (chaoyang).extraConfig), extra (the
TOML), rendered (the file the chart renders before it), reserved (section
names that are the chart's even when not rendered, with their subtables).
*/}}
{{- define "jyt.checkExtraConfig" -}}
{{- $where := .where -}}
{{- $header := "(?m)^[ \\t]*\\[\\[?[^\\]\\n]*\\]" -}}
{{- $first := "" -}}
{{- range $line := splitList "\n" (trim .extra) -}}
{{- $l := trim $line -}}
{{- if and (not $first) $l (not (hasPrefix "#" $l)) -}}
{{- $first = $l -}}
{{- end -}}
{{- end -}}
{{- if and $first (not (hasPrefix "[" $first)) -}}
{{- fail (printf "%s: must start with a [section] header; %q would land in the last section the chart renders" $where $first) -}}
{{- end -}}
{{- $rendered := list -}}
{{- range $m := regexFindAll $header .rendered -1 -}}
{{- $rendered = append $rendered (regexReplaceAll "[\\[\\]\\s\"']" $m "") -}}
{{- end -}}
{{- range $m := regexFindAll $header .extra -1 -}}
{{- $name := regexReplaceAll "[\\[\\]\\s\"']" $m "" -}}
{{- if has $name $rendered -}}
{{- fail (printf "%s repeats [%s], a section the chart renders: set it through the chart's values, or leave it out" $where $name) -}}
{{- end -}}
{{- range $r := $.reserved -}}
{{- if or (eq $name $r) (hasPrefix (printf "%s." $r) $name) -}}
{{- fail (printf "%s sets [%s]: %s" $where $name (get (dict "hospitals" "the hospital registry is rendered from `hospitals`" "channel_apps" "channel apps carry secrets: give them as JYT_GATEWAY__CHANNEL_APPS__<ID>__* in Secret <fullname>-gateway-env") $r)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether `helm test` runs, and so whether the gateway gets its channel app: "true" or "". */}}
{{- define "jyt.testApp.enabled" -}}
{{- if and .Values.tests.enabled .Values.gateway.enabled .Values.hospitals -}}true{{- end -}}
{{- end -}}

{{/* The Secret (key `secret`) holding the test channel app's signing secret. */}}
{{- define "jyt.testApp.secretName" -}}
{{- default (printf "%s-test-app" (include "jyt.fullname" .)) .Values.tests.channelApp.existingSecret -}}
{{- end -}}
