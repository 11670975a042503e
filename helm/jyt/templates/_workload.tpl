{{/*
Every object one running service needs: ConfigMap (its config file),
Deployment, Service, and optionally HorizontalPodAutoscaler and
PodDisruptionBudget. Used once per city-wide service and once per hospital.

Args (dict):
  root      the chart's top-level context
  service   binary and image name, e.g. slot-inventory; also the container
            name, the env prefix (JYT_SLOT_INVENTORY) and OTEL_SERVICE_NAME
  component optional: the app.kubernetes.io/component label that selectors,
            the Service, PDB, NetworkPolicies and metrics tell workloads
            apart by; defaults to service. gateway-search runs service
            gateway under component gateway-search.
  hospital  hospital id, or "" for a city-wide service
  name      object name, e.g. jyt-slot-pumch
  envSecret optional: the Secret read with envFrom (default <name>-env);
            gateway-search reads the gateway's, <fullname>-gateway-env
  internalAuthSecret optional: the Secret holding this pod's internal-auth
            key (default <name>-internal-auth); gateway-search reads the
            gateway's, <fullname>-gateway-internal-auth
  cfg       the service's values (for a hospital: slotInventory merged with
            the hospital's overrides)
  config    the rendered TOML config file
  registry  optional (gateway, gateway-search): the hospital registry part
            of config. Its digest is checksum/registry and checksum/config
            covers the rest, so a rollout says which of the two changed
  postgres  dict enabled, secretName, secretKey
  redis     whether the service reads Redis (gets the URLs Secret)
  secretChecksum  digest of the chart-managed secret values this pod reads
*/}}
{{- define "jyt.workload" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $cfg := .cfg -}}
{{- $prefix := include "jyt.envPrefix" .service -}}
{{- $sel := dict "root" $root "component" (default .service .component) "hospital" .hospital -}}
{{- $configFile := printf "%s.toml" $v.environment -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}-config
  labels:
    {{- include "jyt.labels" $root | nindent 4 }}
    {{- include "jyt.componentLabels" $sel | nindent 4 }}
data:
  {{ $configFile }}: |
    {{- .config | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "jyt.labels" $root | nindent 4 }}
    {{- include "jyt.componentLabels" $sel | nindent 4 }}
spec:
  {{- if not $cfg.autoscaling.enabled }}
  replicas: {{ $cfg.replicas | int }}
  {{- end }}
  revisionHistoryLimit: 3
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "jyt.workloadSelector" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "jyt.labels" $root | nindent 8 }}
        {{- include "jyt.componentLabels" $sel | nindent 8 }}
      annotations:
        # A change to either rolls these pods, and only these: a hospital's
        # config is its own, and the gateway's registry only lists hospitals.
        checksum/config: {{ ternary (replace (default "" .registry) "" .config) .config (ne (default "" .registry) "") | sha256sum }}
        {{- with .registry }}
        checksum/registry: {{ . | sha256sum }}
        {{- end }}
        checksum/secret: {{ .secretChecksum | sha256sum }}
    spec:
      serviceAccountName: {{ include "jyt.fullname" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- if $cfg.affinity }}
      affinity:
        {{- toYaml $cfg.affinity | nindent 8 }}
      {{- else }}
      affinity:
        # Spread replicas over nodes, so a node loss takes at most one.
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "jyt.workloadSelector" $sel | nindent 20 }}
      {{- end }}
      {{- with $cfg.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .service }}
          image: {{ include "jyt.image" (dict "root" $root "service" .service) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            # The API: callers (the gateway's, the Ingress) only.
            - name: http
              containerPort: {{ $cfg.port | int }}
              protocol: TCP
            # /metrics, /healthz, /readyz only (http.ops_port): Prometheus
            # and the kubelet; the API port answers /metrics with 404.
            - name: ops
              containerPort: {{ $v.opsPort | int }}
              protocol: TCP
          env:
            # JYT_CONFIG_DIR, JYT_ENV and the OTEL_* variables come first, in
            # this order, in every pod (k8s/overlays/prod patches them by index).
            - name: JYT_CONFIG_DIR
              value: /etc/jyt
            - name: JYT_ENV
              value: {{ $v.environment | quote }}
            - name: OTEL_SERVICE_NAME
              value: {{ .service | quote }}
            # $(JYT_ENV): whatever environment the pod runs as, never another.
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.namespace=jyt,deployment.environment=$(JYT_ENV)%s" (ternary (printf ",jyt.hospital=%s" .hospital) "" (ne .hospital "")) | quote }}
            {{- if $v.telemetry.otlpEndpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ $v.telemetry.otlpEndpoint | quote }}
            {{- end }}
            {{- if .hospital }}
            - name: {{ $prefix }}__HOSPITAL__ID
              value: {{ .hospital | quote }}
            {{- end }}
            {{- if .redis }}
            - name: {{ $prefix }}__REDIS__URLS
              valueFrom:
                secretKeyRef:
                  name: {{ include "jyt.redisSecretName" $root }}
                  key: {{ $v.redis.existingSecretKey }}
            {{- end }}
            {{- if .postgres.enabled }}
            - name: {{ $prefix }}__POSTGRES__URL
              valueFrom:
                secretKeyRef:
                  name: {{ .postgres.secretName }}
                  key: {{ .postgres.secretKey }}
            {{- end }}
            {{- with trim (include "jyt.serviceEnv" (dict "root" $root "service" .service "secretName" (default (printf "%s-internal-auth" .name) .internalAuthSecret))) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $cfg.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # Secret settings the chart does not model (keys are variable names).
          envFrom:
            - secretRef:
                name: {{ default (printf "%s-env" .name) .envSecret }}
                optional: true
          # Probes on the ops port (the kubelet is not subject to NetworkPolicy).
          startupProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: {{ $v.probes.startup.periodSeconds | int }}
            failureThreshold: {{ $v.probes.startup.failureThreshold | int }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: ops
            periodSeconds: {{ $v.probes.readiness.periodSeconds | int }}
            timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds | int }}
            failureThreshold: {{ $v.probes.readiness.failureThreshold | int }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: {{ $v.probes.liveness.periodSeconds | int }}
            timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds | int }}
            failureThreshold: {{ $v.probes.liveness.failureThreshold | int }}
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/jyt
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: config
          configMap:
            name: {{ .name }}-config
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "jyt.labels" $root | nindent 4 }}
    {{- include "jyt.componentLabels" $sel | nindent 4 }}
    # Picked up by the ServiceMonitor, which scrapes port ops.
    jyt.example/metrics: "true"
spec:
  type: ClusterIP
  selector:
    {{- include "jyt.workloadSelector" $sel | nindent 4 }}
  ports:
    - name: http
      port: {{ $cfg.port | int }}
      targetPort: http
      protocol: TCP
    - name: ops
      port: {{ $v.opsPort | int }}
      targetPort: ops
      protocol: TCP
{{- if $cfg.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "jyt.labels" $root | nindent 4 }}
    {{- include "jyt.componentLabels" $sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ $cfg.autoscaling.minReplicas | int }}
  maxReplicas: {{ $cfg.autoscaling.maxReplicas | int }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $cfg.autoscaling.targetCPUUtilizationPercentage | int }}
  behavior:
    # Release-second surges: add pods at once, give them back slowly.
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Percent
          value: 100
          periodSeconds: 15
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
        - type: Percent
          value: 25
          periodSeconds: 60
{{- end }}
{{- if $cfg.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "jyt.labels" $root | nindent 4 }}
    {{- include "jyt.componentLabels" $sel | nindent 4 }}
spec:
  maxUnavailable: {{ $cfg.pdb.maxUnavailable | int }}
  selector:
    matchLabels:
      {{- include "jyt.workloadSelector" $sel | nindent 6 }}
{{- end }}
{{- end -}}
