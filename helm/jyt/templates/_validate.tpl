{{/*
Rules values.schema.json cannot express (or that must hold even when it is
skipped); a broken one stops rendering with a message naming the value.
Per-hospital rules (autoscaling after the merge with slotInventory,
extraConfig) are checked where a hospital is rendered, slot-inventory.yaml;
extraConfig of every service by jyt.checkExtraConfig (_helpers.tpl).
*/}}
{{- define "jyt.validate" -}}
{{- $seen := dict -}}
{{- range $h := .Values.hospitals -}}
{{- if hasKey $seen $h.id -}}
{{- fail (printf "hospitals: id %q appears twice" $h.id) -}}
{{- end -}}
{{- $_ := set $seen $h.id true -}}
{{- end -}}
{{- range $key := list "gateway" "gatewaySearch" "cardIssuing" "channelAccounting" "slotInventory" -}}
{{- $a := (index $.Values $key).autoscaling -}}
{{- if gt ($a.minReplicas | int) ($a.maxReplicas | int) -}}
{{- fail (printf "%s.autoscaling: minReplicas %d > maxReplicas %d" $key ($a.minReplicas | int) ($a.maxReplicas | int)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.gateway.enabled) -}}
{{- fail "ingress.enabled: the Ingress routes to the gateway, which gateway.enabled turns off" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not (and .Values.ingress.host .Values.ingress.tls.secretName)) -}}
{{- fail "ingress.tls.enabled needs ingress.host and ingress.tls.secretName" -}}
{{- end -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if not (regexMatch "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$" $tag) -}}
{{- fail (printf "image.tag %q is not a valid image tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -" $tag) -}}
{{- end -}}
{{- range $key := list "gateway" "cardIssuing" "channelAccounting" "slotInventory" -}}
{{- if eq ((index $.Values $key).port | int) ($.Values.opsPort | int) -}}
{{- fail (printf "opsPort %d is also %s.port: /metrics, /healthz and /readyz need a port of their own" ($.Values.opsPort | int) $key) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tests.hospital (not (hasKey $seen .Values.tests.hospital)) -}}
{{- fail (printf "tests.hospital %q is not in hospitals" .Values.tests.hospital) -}}
{{- end -}}
{{- end -}}
