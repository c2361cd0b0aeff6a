{{/* Names, labels, and the pieces several templates share. */}}

{{- define "fireside.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fireside.fullname" -}}
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

{{/* The worker StatefulSet and its headless Service share this name: pod N is <name>-N.<name>. */}}
{{- define "fireside.workerName" -}}
{{- printf "%s-worker" (include "fireside.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "fireside.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "fireside.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fireside.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fireside.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fireside.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fireside.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fireside.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "fireside.workerImage" -}}
{{- $repository := default .Values.image.repository .Values.workers.image.repository }}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) .Values.workers.image.tag) }}
{{- end }}

{{/* Whether a database / Redis is configured (inline or in an existing Secret). */}}
{{- define "fireside.hasDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}
{{- define "fireside.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* More than one gateway at any time. */}}
{{- define "fireside.manyGateways" -}}
{{- if or .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The gateway's --workers: each StatefulSet pod by its stable DNS name. */}}
{{- define "fireside.workerAddresses" -}}
{{- $name := include "fireside.workerName" . }}
{{- $addresses := list }}
{{- range $i := until (int .Values.workers.replicaCount) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" $name $i $name $.Release.Namespace $.Values.clusterDomain (int $.Values.workers.port)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/* Engine flags for whichever process loads the model. */}}
{{- define "fireside.modelArgs" -}}
{{- if .Values.model.path }}
- --model
- {{ .Values.model.path | quote }}
{{- end }}
{{- if .Values.model.servedName }}
- --served-model-name
- {{ .Values.model.servedName | quote }}
{{- end }}
{{- $device := .Values.engine.device }}
{{- if and .Values.workers.enabled .Values.workers.gpu.enabled }}{{ $device = "cuda" }}{{ end }}
{{- if ne $device "auto" }}
- --device
- {{ $device | quote }}
{{- end }}
{{- with .Values.engine.maxNumSeqs }}
- --max-num-seqs
- {{ . | quote }}
{{- end }}
{{- with .Values.engine.maxModelLen }}
- --max-model-len
- {{ . | quote }}
{{- end }}
{{- with .Values.engine.kvCacheGib }}
- --kv-cache-gib
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The model volume, where one is named. */}}
{{- define "fireside.modelVolumeMount" -}}
{{- if .Values.model.existingClaim }}
- name: models
  mountPath: /models
  readOnly: true
{{- end }}
{{- end }}
{{- define "fireside.modelVolume" -}}
{{- if .Values.model.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{/* FIRESIDE_SECRET_KEY, FIRESIDE_DATABASE_URL, FIRESIDE_REDIS_URL from their Secrets. */}}
{{- define "fireside.secretEnv" -}}
- name: FIRESIDE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fireside.fullname" .) .Values.secretKey.existingSecret }}
      key: {{ if .Values.secretKey.existingSecret }}{{ .Values.secretKey.existingSecretKey }}{{ else }}secret-key{{ end }}
{{- include "fireside.databaseEnv" (dict "root" . "secretName" (include "fireside.fullname" .)) }}
{{- if include "fireside.hasRedis" . }}
- name: FIRESIDE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fireside.fullname" .) .Values.redis.existingSecret }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}
{{- end }}

{{/* FIRESIDE_DATABASE_URL from the existing Secret, else from `secretName` (the release's
     Secret, or the migration hook's own). */}}
{{- define "fireside.databaseEnv" -}}
{{- $v := .root.Values }}
{{- if include "fireside.hasDatabase" .root }}
- name: FIRESIDE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default .secretName $v.database.existingSecret }}
      key: {{ if $v.database.existingSecret }}{{ $v.database.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}
{{- end }}

{{/* The TLS material for PostgreSQL and Redis, mounted where their URLs can name it. */}}
{{- define "fireside.storeTlsMounts" -}}
{{- if .Values.database.tls.existingSecret }}
- name: database-tls
  mountPath: /etc/fireside/tls/database
  readOnly: true
{{- end }}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: /etc/fireside/tls/redis
  readOnly: true
{{- end }}
{{- end }}
{{- define "fireside.storeTlsVolumes" -}}
{{- if .Values.database.tls.existingSecret }}
- name: database-tls
  secret:
    secretName: {{ .Values.database.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Settings that cannot work together stop the render with the reason. */}}
{{- define "fireside.validate" -}}
{{- if include "fireside.manyGateways" . }}
{{- if not (and (include "fireside.hasDatabase" .) (include "fireside.hasRedis" .)) }}
{{- fail "more than one gateway (gateway.replicaCount > 1 or gateway.autoscaling.enabled) needs PostgreSQL and Redis that they share: set database.url (or database.existingSecret) and redis.url (or redis.existingSecret)" }}
{{- end }}
{{- if not .Values.gateway.persistence.enabled }}
{{- fail "more than one gateway needs one data volume they all mount (uploaded files): set gateway.persistence.enabled with a ReadWriteMany volume" }}
{{- end }}
{{- if and (not .Values.gateway.persistence.existingClaim) (not (has "ReadWriteMany" .Values.gateway.persistence.accessModes)) }}
{{- fail "more than one gateway needs gateway.persistence.accessModes to include ReadWriteMany (or gateway.persistence.existingClaim naming such a volume): they share uploaded files" }}
{{- end }}
{{- end }}
{{- if and .Values.workers.gpu.enabled (not .Values.workers.enabled) }}
{{- fail "workers.gpu.enabled needs workers.enabled" }}
{{- end }}
{{- if and .Values.workers.tls.enabled (not .Values.workers.tls.existingSecret) }}
{{- fail "workers.tls.enabled needs workers.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if and .Values.workers.tls.requireClientCert (not .Values.workers.tls.clientSecret) }}
{{- fail "workers.tls.requireClientCert needs workers.tls.clientSecret (the gateways' client certificate: tls.crt, tls.key)" }}
{{- end }}
{{- if and .Values.workers.tls.requireClientCert (not .Values.workers.tls.enabled) }}
{{- fail "workers.tls.requireClientCert needs workers.tls.enabled" }}
{{- end }}
{{- end }}
