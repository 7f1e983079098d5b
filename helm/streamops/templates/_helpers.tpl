{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "streamops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamops.fullname" -}}
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

{{/* Labels: call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "streamops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamops.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamops.labels" -}}
{{ include "streamops.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels every pod of the release carries; the NetworkPolicy admits traffic between them. */}}
{{- define "streamops.releaseLabels" -}}
app.kubernetes.io/name: {{ include "streamops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Service accounts --------------------------------------------------------------------------- */}}

{{- define "streamops.airflowServiceAccountName" -}}
{{- printf "%s-airflow" (include "streamops.fullname" .) -}}
{{- end -}}

{{/* The scheduler and the triggerer, which launch, watch and stop Spark drivers, run as this
account; the other Airflow pods and the Jobs run as streamops.airflowServiceAccountName, which
has no Role. */}}
{{- define "streamops.launcherServiceAccountName" -}}
{{- printf "%s-spark-launcher" (include "streamops.fullname" .) -}}
{{- end -}}

{{- define "streamops.sparkServiceAccountName" -}}
{{- default (printf "%s-spark" (include "streamops.fullname" .)) .Values.spark.serviceAccountName -}}
{{- end -}}

{{/* Security contexts -------------------------------------------------------------------------- */}}

{{/* Pod level; call with (dict "uid" 50000 "gid" 0). */}}
{{- define "streamops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
fsGroup: {{ .gid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container level; call with (dict "readOnly" true). */}}
{{- define "streamops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ .readOnly }}
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Endpoints: in-cluster service or the external one ----------------------------------------- */}}

{{- define "streamops.kafkaHost" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s-kafka.%s.svc" (include "streamops.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "kafka.external.host is required when kafka.enabled is false" .Values.kafka.external.host -}}
{{- end -}}
{{- end -}}

{{- define "streamops.kafkaPort" -}}
{{- if .Values.kafka.enabled -}}{{ .Values.kafka.port }}{{- else -}}{{ .Values.kafka.external.port }}{{- end -}}
{{- end -}}

{{- define "streamops.mariadbHost" -}}
{{- if .Values.mariadb.enabled -}}
{{- printf "%s-mariadb.%s.svc" (include "streamops.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "mariadb.external.host is required when mariadb.enabled is false" .Values.mariadb.external.host -}}
{{- end -}}
{{- end -}}

{{- define "streamops.mariadbPort" -}}
{{- if .Values.mariadb.enabled -}}{{ .Values.mariadb.port }}{{- else -}}{{ .Values.mariadb.external.port }}{{- end -}}
{{- end -}}

{{- define "streamops.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis.%s.svc" (include "streamops.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "redis.external.host is required when redis.enabled is false" .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "streamops.redisPort" -}}
{{- if .Values.redis.enabled -}}{{ .Values.redis.port }}{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}

{{- define "streamops.apiServerHost" -}}
{{- printf "%s-api-server.%s.svc" (include "streamops.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Secrets ----------------------------------------------------------------------------------- */}}

{{- define "streamops.airflowSecretName" -}}
{{- default (printf "%s-airflow" (include "streamops.fullname" .)) .Values.airflow.secrets.existingSecret -}}
{{- end -}}

{{- define "streamops.mariadbSecretName" -}}
{{- default (printf "%s-mariadb" (include "streamops.fullname" .)) .Values.mariadb.existingSecret -}}
{{- end -}}

{{- define "streamops.mariadbSecretKey" -}}
{{- if .Values.mariadb.existingSecret -}}{{ .Values.mariadb.existingSecretPasswordKey }}{{- else -}}mariadb-password{{- end -}}
{{- end -}}

{{/* The MariaDB root password, for the in-cluster server only (nothing of ours logs in as root). */}}
{{- define "streamops.mariadbRootSecretKey" -}}
{{- if .Values.mariadb.existingSecret -}}{{ .Values.mariadb.existingSecretRootPasswordKey }}{{- else -}}mariadb-root-password{{- end -}}
{{- end -}}

{{- define "streamops.redisSecretName" -}}
{{- default (printf "%s-redis" (include "streamops.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "streamops.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret -}}{{ .Values.redis.auth.existingSecretPasswordKey }}{{- else -}}redis-password{{- end -}}
{{- end -}}

{{/* STREAMOPS_REDIS_PASSWORD, for every container that talks to Redis. */}}
{{- define "streamops.redisPasswordEnv" -}}
- name: STREAMOPS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.redisSecretName" . }}
      key: {{ include "streamops.redisSecretKey" . }}
{{- end -}}

{{- define "streamops.metadataSecretName" -}}
{{- if .Values.airflow.metadataConnection.existingSecret -}}
{{- .Values.airflow.metadataConnection.existingSecret -}}
{{- else -}}
{{- printf "%s-airflow-metadata" (include "streamops.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "streamops.metadataSecretKey" -}}
{{- if .Values.airflow.metadataConnection.existingSecret -}}{{ .Values.airflow.metadataConnection.existingSecretKey }}{{- else -}}connection{{- end -}}
{{- end -}}

{{/*
A secret value: the explicit one, else the one already stored in the cluster (so upgrades keep
it), else a new random one. Call with (dict "ctx" $ "secret" name "key" key "value" explicit
"length" 32).
*/}}
{{- define "streamops.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment of the Airflow containers and Jobs (Spark pods get no credential env) ------- */}}

{{- define "streamops.env" -}}
- name: STREAMOPS_MARIADB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.mariadbSecretName" . }}
      key: {{ include "streamops.mariadbSecretKey" . }}
{{ include "streamops.redisPasswordEnv" . }}
{{- include "streamops.kafkaPasswordEnv" . }}
- name: STREAMOPS_AIRFLOW_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.airflowSecretName" . }}
      key: admin-password
- name: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.metadataSecretName" . }}
      key: {{ include "streamops.metadataSecretKey" . }}
- name: AIRFLOW__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.airflowSecretName" . }}
      key: fernet-key
- name: AIRFLOW__API__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.airflowSecretName" . }}
      key: api-secret-key
- name: AIRFLOW__API_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.airflowSecretName" . }}
      key: jwt-secret
{{- range .Values.airflow.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end -}}

{{- define "streamops.envFrom" -}}
- configMapRef:
    name: {{ include "streamops.fullname" . }}-env
{{- end -}}

{{/* Writable folders under a read-only root filesystem. */}}
{{- define "streamops.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: airflow-home
  mountPath: /opt/airflow
{{- end -}}

{{- define "streamops.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: airflow-home
  emptyDir:
    sizeLimit: 2Gi
{{- end -}}

{{- define "streamops.stateVolume" -}}
- name: state
{{- if .Values.storage.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-state" (include "streamops.fullname" .)) .Values.storage.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* An init container that waits until `airflow db migrate` has brought the schema up to date. */}}
{{- define "streamops.waitForMigrations" -}}
- name: wait-for-airflow-migrations
  image: {{ include "streamops.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["airflow", "db", "check-migrations", "--migration-wait-timeout=600"]
  envFrom:
    {{- include "streamops.envFrom" . | nindent 4 }}
  env:
    {{- include "streamops.env" . | nindent 4 }}
  resources:
    {{- toYaml .Values.airflow.initContainerResources | nindent 4 }}
  securityContext:
    {{- include "streamops.containerSecurityContext" (dict "readOnly" .Values.securityContext.readOnlyRootFilesystem) | nindent 4 }}
  volumeMounts:
    {{- include "streamops.scratchVolumeMounts" . | nindent 4 }}
{{- end -}}

{{/* Checks that fail the render with a clear message instead of producing a broken install. */}}
{{- define "streamops.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.airflow.metadataConnection.existingSecret) (not .Values.airflow.metadataConnection.url) -}}
{{- fail "Airflow needs a metadata database: set postgresql.enabled=true (trial), or airflow.metadataConnection.existingSecret or airflow.metadataConnection.url (production)." -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.airflow.metadataConnection.existingSecret .Values.airflow.metadataConnection.url) -}}
{{- fail "airflow.metadataConnection is for an external database: set postgresql.enabled=false to use it." -}}
{{- end -}}
{{- end -}}

{{/* Network policies -------------------------------------------------------------------------- */}}

{{/* The pods of this release with one of the given components; call with
(dict "ctx" $ "components" (list "scheduler" "triggerer")). */}}
{{- define "streamops.componentSelector" -}}
matchLabels:
  {{- include "streamops.releaseLabels" .ctx | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: {{ toJson .components }}
{{- end -}}

{{/* The components that run Airflow (and, through the plugin and the tasks, the platform code). */}}
{{- define "streamops.airflowComponents" -}}
{{- toJson (list "api-server" "scheduler" "dag-processor" "triggerer") -}}
{{- end -}}

{{/* Spark pods, labelled by the pod templates of configmap-spark.yaml. */}}
{{- define "streamops.sparkComponents" -}}
{{- toJson (list "spark-driver" "spark-executor") -}}
{{- end -}}

{{/* NetworkPolicy peers outside the release from a networkPolicy.apiServer-like block. */}}
{{- define "streamops.externalPeers" -}}
{{- range .allowedCidrs }}
- ipBlock:
    cidr: {{ . | quote }}
{{- end }}
{{- range .allowedNamespaces }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . | quote }}
{{- end }}
{{- range .allowedPods }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace | quote }}
  podSelector:
    matchLabels:
      {{- range (splitList "," .labels) }}
      {{- $pair := splitn "=" 2 . }}
      {{ $pair._0 }}: {{ $pair._1 | quote }}
      {{- end }}
{{- end }}
{{- end -}}
