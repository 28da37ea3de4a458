{{/* Names and labels. */}}
{{- define "tenant-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenant-operator.fullname" -}}
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

{{- define "tenant-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tenant-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tenant-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tenant-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tenant-operator
{{- end -}}

{{- define "tenant-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Operator pods; `replicas` is the older name of replicaCount. */}}
{{- define "tenant-operator.replicas" -}}
{{- int (coalesce .Values.replicas .Values.replicaCount 1) -}}
{{- end -}}

{{/* Prefix of the environment variables holding a named server's admin credentials: (list "RABBITMQ" name). */}}
{{- define "tenant-operator.serverEnv" -}}
{{- printf "%s_%s" (index . 0) (regexReplaceAll "[^A-Za-z0-9]" (index . 1) "_" | upper) -}}
{{- end -}}

{{/* Environment variable holding a MySQL server's admin password. */}}
{{- define "tenant-operator.mysqlPasswordEnv" -}}
{{- printf "MYSQL_%s_ADMIN_PASSWORD" (regexReplaceAll "[^A-Za-z0-9]" . "_" | upper) -}}
{{- end -}}

{{/*
The operator's config.yaml. Credentials are ${VAR} references; the
Deployment sets those variables from the existing Secrets (see
tenant-operator.credentialsEnv).
*/}}
{{- define "tenant-operator.config" -}}
{{- $c := .Values.config -}}
{{- $out := dict "namespacePrefix" $c.namespacePrefix "ingressControllerNamespace" $c.ingressControllerNamespace "workers" (int $c.workers) "backupsBucketRetentionDays" (int (default 90 $c.backupsBucketRetentionDays)) "archiveRetentionDays" (int (default 2555 $c.archiveRetentionDays)) "backupImage" (default (include "tenant-operator.image" .) $c.backupImage) -}}
{{- with $c.clusterDomain }}{{ $_ := set $out "clusterDomain" . }}{{ end -}}
{{- $defaults := deepCopy (default (dict) $c.defaults) -}}
{{- /* The older key, set by the user: it wins over the chart's default grace period. */ -}}
{{- if $c.defaultGracePeriod -}}
{{- $deletion := default (dict) $defaults.deletion -}}
{{- $_ := set $deletion "gracePeriod" $c.defaultGracePeriod -}}
{{- $_ := set $defaults "deletion" $deletion -}}
{{- end -}}
{{- with $defaults }}{{ $_ := set $out "defaults" . }}{{ end -}}
{{- with $c.sharedServices }}{{ $_ := set $out "sharedServices" . }}{{ end -}}
{{- with $c.tiers }}{{ $_ := set $out "tiers" . }}{{ end -}}
{{- with $c.policy }}{{ $_ := set $out "policy" . }}{{ end -}}
{{- $sh := .Values.sharding -}}
{{- $_ := set $out "sharding" (dict "shards" (int $sh.shards) "name" (include "tenant-operator.fullname" . | trunc 40 | trimSuffix "-") "namespace" .Release.Namespace "leaseDuration" $sh.leaseDuration "renewInterval" $sh.renewInterval) -}}
{{- if $c.mysql.servers -}}
{{- $servers := dict -}}
{{- range $name, $srv := $c.mysql.servers -}}
{{- $s := dict "host" (required (printf "config.mysql.servers.%s.host is required" $name) $srv.host) "port" (int (default 3306 $srv.port)) "adminUser" (default "root" $srv.adminUser) -}}
{{- $_ := required (printf "config.mysql.servers.%s.existingSecret is required (the Secret holding its admin password)" $name) $srv.existingSecret -}}
{{- $_ := set $s "adminPassword" (printf "${%s}" (include "tenant-operator.mysqlPasswordEnv" $name)) -}}
{{- with $srv.userHost }}{{ $_ := set $s "userHost" . }}{{ end -}}
{{- with $srv.publicHost }}{{ $_ := set $s "publicHost" . }}{{ end -}}
{{- with $srv.egress }}{{ $_ := set $s "egress" . }}{{ end -}}
{{- if hasKey $srv "weight" }}{{ $_ := set $s "weight" $srv.weight }}{{ end -}}
{{- $_ := set $servers $name $s -}}
{{- end -}}
{{- $mysql := dict "servers" $servers -}}
{{- with $c.mysql.default }}{{ $_ := set $mysql "default" . }}{{ end -}}
{{- $_ := set $out "mysql" $mysql -}}
{{- end -}}
{{- if $c.objectStorage.enabled -}}
{{- $o := $c.objectStorage -}}
{{- $store := dict "backend" $o.backend "region" $o.region -}}
{{- if eq $o.backend "minio" }}{{ $_ := required "config.objectStorage.endpoint is required for the minio backend" $o.endpoint }}{{ end -}}
{{- with $o.endpoint }}{{ $_ := set $store "endpoint" . }}{{ end -}}
{{- with $o.publicEndpoint }}{{ $_ := set $store "publicEndpoint" . }}{{ end -}}
{{- with $o.egress }}{{ $_ := set $store "egress" . }}{{ end -}}
{{- if $o.existingSecret -}}
{{- $_ := set $store "accessKey" "${OBJECT_STORAGE_ACCESS_KEY}" -}}
{{- $_ := set $store "secretKey" "${OBJECT_STORAGE_SECRET_KEY}" -}}
{{- else if eq $o.backend "minio" -}}
{{- fail "config.objectStorage.existingSecret is required for the minio backend" -}}
{{- end -}}
{{- $_ := set $out "objectStorage" $store -}}
{{- end -}}
{{- if and $c.rabbitmq.enabled $c.rabbitmq.servers -}}
{{- $servers := dict -}}
{{- range $name, $srv := $c.rabbitmq.servers -}}
{{- $s := dict "managementUrl" (required (printf "config.rabbitmq.servers.%s.managementUrl is required" $name) $srv.managementUrl) "amqpHost" (required (printf "config.rabbitmq.servers.%s.amqpHost is required" $name) $srv.amqpHost) "amqpPort" (int (default 5672 $srv.amqpPort)) -}}
{{- $_ := required (printf "config.rabbitmq.servers.%s.existingSecret is required (the Secret holding its admin user and password)" $name) $srv.existingSecret -}}
{{- $env := include "tenant-operator.serverEnv" (list "RABBITMQ" $name) -}}
{{- $_ := set $s "adminUser" (printf "${%s_ADMIN_USER}" $env) -}}
{{- $_ := set $s "adminPassword" (printf "${%s_ADMIN_PASSWORD}" $env) -}}
{{- with $srv.publicHost }}{{ $_ := set $s "publicHost" . }}{{ end -}}
{{- with $srv.egress }}{{ $_ := set $s "egress" . }}{{ end -}}
{{- if hasKey $srv "weight" }}{{ $_ := set $s "weight" $srv.weight }}{{ end -}}
{{- $_ := set $servers $name $s -}}
{{- end -}}
{{- $rabbit := dict "servers" $servers -}}
{{- with $c.rabbitmq.default }}{{ $_ := set $rabbit "default" . }}{{ end -}}
{{- $_ := set $out "rabbitmq" $rabbit -}}
{{- else if $c.rabbitmq.enabled -}}
{{- $r := $c.rabbitmq -}}
{{- $rabbit := dict "managementUrl" (required "config.rabbitmq.managementUrl is required" $r.managementUrl) "amqpHost" (required "config.rabbitmq.amqpHost is required" $r.amqpHost) "amqpPort" (int (default 5672 $r.amqpPort)) -}}
{{- $_ := required "config.rabbitmq.existingSecret is required (the Secret holding the admin user and password)" $r.existingSecret -}}
{{- $_ := set $rabbit "adminUser" "${RABBITMQ_ADMIN_USER}" -}}
{{- $_ := set $rabbit "adminPassword" "${RABBITMQ_ADMIN_PASSWORD}" -}}
{{- with $r.publicHost }}{{ $_ := set $rabbit "publicHost" . }}{{ end -}}
{{- with $r.egress }}{{ $_ := set $rabbit "egress" . }}{{ end -}}
{{- $_ := set $out "rabbitmq" $rabbit -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The environment variables the config's ${VAR} references need. */}}
{{- define "tenant-operator.credentialsEnv" -}}
{{- $c := .Values.config -}}
{{- range $name, $srv := $c.mysql.servers }}
- name: {{ include "tenant-operator.mysqlPasswordEnv" $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $srv.existingSecret }}
      key: {{ default "password" $srv.passwordKey }}
{{- end }}
{{- if and $c.objectStorage.enabled $c.objectStorage.existingSecret }}
- name: OBJECT_STORAGE_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $c.objectStorage.existingSecret }}
      key: {{ $c.objectStorage.accessKeyKey }}
- name: OBJECT_STORAGE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $c.objectStorage.existingSecret }}
      key: {{ $c.objectStorage.secretKeyKey }}
{{- end }}
{{- if and $c.rabbitmq.enabled $c.rabbitmq.servers }}
{{- range $name, $srv := $c.rabbitmq.servers }}
{{- $env := include "tenant-operator.serverEnv" (list "RABBITMQ" $name) }}
- name: {{ $env }}_ADMIN_USER
  valueFrom:
    secretKeyRef:
      name: {{ $srv.existingSecret }}
      key: {{ default "username" $srv.usernameKey }}
- name: {{ $env }}_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $srv.existingSecret }}
      key: {{ default "password" $srv.passwordKey }}
{{- end }}
{{- else if $c.rabbitmq.enabled }}
- name: RABBITMQ_ADMIN_USER
  valueFrom:
    secretKeyRef:
      name: {{ $c.rabbitmq.existingSecret }}
      key: {{ $c.rabbitmq.usernameKey }}
- name: RABBITMQ_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $c.rabbitmq.existingSecret }}
      key: {{ $c.rabbitmq.passwordKey }}
{{- end }}
{{- end -}}
