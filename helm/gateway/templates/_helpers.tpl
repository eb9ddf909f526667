{{/* Names, labels, and the pieces the gateway and worker Deployments share. */}}

{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: fullname-suffix, within 63 characters. */}}
{{- define "gateway.componentName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "gateway.fullname" $root | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (gateway, worker, redis). */}}
{{- define "gateway.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "gateway.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gateway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL the gateway uses: the in-chart Redis, or redis.url. */}}
{{- define "gateway.redisUrl" -}}
{{- if .Values.redis.inChart.enabled -}}
{{- printf "redis://%s:6379/0" (include "gateway.componentName" (list . "redis")) -}}
{{- else -}}
{{- required "redis.url is required (or enable redis.inChart for a trial)" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/*
The gateway's configuration file: .Values.config plus what the chart owns. Redis is
external in Kubernetes, so the gateway never starts a private redis-server
(private: never) and waits for the URL instead; the Batch API's files live on the
mounted files store.
*/}}
{{- define "gateway.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "redis" (dict "url" (include "gateway.redisUrl" .) "private" "never") -}}
{{- $files := deepCopy (default (dict) $cfg.files) -}}
{{- $_ := set $files "dir" .Values.filesStore.mountPath -}}
{{- $_ := set $cfg "files" $files -}}
{{- toYaml $cfg -}}
{{- end -}}

{{- define "gateway.port" -}}
{{- $server := default (dict) .Values.config.server -}}
{{- default 8080 $server.port | int -}}
{{- end -}}

{{- define "gateway.shutdownGraceSeconds" -}}
{{- $server := default (dict) .Values.config.server -}}
{{- $grace := 30.0 -}}
{{- if hasKey $server "shutdown_grace_s" -}}{{- $grace = $server.shutdown_grace_s -}}{{- end -}}
{{- ceil (float64 $grace) | int -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the server's own shutdown
grace for in-flight requests and streams, plus a margin. An explicit value may
only lengthen it: a shorter one would cut streams off with SIGKILL.
*/}}
{{- define "gateway.terminationGrace" -}}
{{- $root := index . 0 -}}
{{- $w := index . 1 -}}
{{- $preStop := 0 -}}
{{- if hasKey $w "preStopSleepSeconds" -}}{{- $preStop = int $w.preStopSleepSeconds -}}{{- end -}}
{{- $min := add $preStop (include "gateway.shutdownGraceSeconds" $root | int) (int $w.terminationGraceMarginSeconds) -}}
{{- if kindIs "invalid" $w.terminationGracePeriodSeconds -}}
{{- $min -}}
{{- else if lt (int $w.terminationGracePeriodSeconds) (int $min) -}}
{{- fail (printf "terminationGracePeriodSeconds %v is shorter than preStop + config.server.shutdown_grace_s + margin = %d" $w.terminationGracePeriodSeconds (int $min)) -}}
{{- else -}}
{{- int $w.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{- define "gateway.env" -}}
- name: GATEWAY_CONFIG
  value: /etc/gateway/config.yaml
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
      {{- if hasKey . "optional" }}
      optional: {{ .optional }}
      {{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gateway.filesClaimName" -}}
{{- default (include "gateway.componentName" (list . "files")) .Values.filesStore.persistence.existingClaim -}}
{{- end -}}

{{- define "gateway.volumes" -}}
- name: config
  configMap:
    name: {{ include "gateway.componentName" (list . "config") }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: files
{{- if .Values.filesStore.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "gateway.filesClaimName" . }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.filesStore.emptyDirSizeLimit }}
{{- end }}
{{- end -}}

{{- define "gateway.volumeMounts" -}}
- name: config
  mountPath: /etc/gateway
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: files
  mountPath: {{ .Values.filesStore.mountPath }}
{{- end -}}

{{/* Pod-level settings both workloads share: scheduling, service account, security. */}}
{{- define "gateway.podSpecCommon" -}}
{{- $root := index . 0 -}}
{{- $w := index . 1 -}}
{{- $component := index . 2 -}}
serviceAccountName: {{ include "gateway.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $w.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "gateway.selectorLabels" (list $root $component) | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Which scaler manages the worker Deployment: "keda", "hpa" or "" (fixed replicas). */}}
{{- define "gateway.workerScaler" -}}
{{- if and .Values.worker.keda.enabled (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") -}}
keda
{{- else if .Values.worker.autoscaling.enabled -}}
hpa
{{- end -}}
{{- end -}}
