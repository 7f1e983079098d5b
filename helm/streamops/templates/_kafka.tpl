{{/* Kafka authentication (SASL/SCRAM): the protocol, the Secret, the clients' environment ----- */}}

{{/* How every client reaches the brokers (STREAMOPS_KAFKA_SECURITY_PROTOCOL): PLAINTEXT without
auth; the in-cluster broker's SASL_PLAINTEXT; an external cluster's kafka.external.securityProtocol. */}}
{{- define "streamops.kafkaSecurityProtocol" -}}
{{- if not .Values.kafka.auth.enabled -}}
PLAINTEXT
{{- else if .Values.kafka.enabled -}}
SASL_PLAINTEXT
{{- else -}}
{{- .Values.kafka.external.securityProtocol -}}
{{- end -}}
{{- end -}}

{{- define "streamops.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "streamops.fullname" .)) .Values.kafka.auth.existingSecret -}}
{{- end -}}

{{- define "streamops.kafkaSecretKey" -}}
{{- if .Values.kafka.auth.existingSecret -}}{{ .Values.kafka.auth.existingSecretPasswordKey }}{{- else -}}kafka-password{{- end -}}
{{- end -}}

{{/* STREAMOPS_KAFKA_SASL_PASSWORD from the Secret, for every container that talks to Kafka (the
broker too); nothing when auth is off. Starts with a newline: include it right after an entry. */}}
{{- define "streamops.kafkaPasswordEnv" -}}
{{- if .Values.kafka.auth.enabled }}
- name: STREAMOPS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamops.kafkaSecretName" . }}
      key: {{ include "streamops.kafkaSecretKey" . }}
{{- end -}}
{{- end -}}

