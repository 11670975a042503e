{{/*
Rules values.schema.json cannot express; a broken one stops rendering with
a message naming the value.
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
{{- if and .Values.tests.hospital (not (hasKey $seen .Values.tests.hospital)) -}}
{{- fail (printf "tests.hospital %q is not in hospitals" .Values.tests.hospital) -}}
{{- end -}}
{{- end -}}
