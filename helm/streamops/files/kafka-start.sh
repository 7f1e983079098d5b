#!/bin/sh
# Starts the single-node KRaft broker of the Helm chart (mounted from the release's -kafka
# ConfigMap) and of docker-compose.yaml (mounted from this file): the official apache/kafka image,
# with clients authenticating by SASL/SCRAM. POSIX sh (the image's is BusyBox's); tests/deploy runs
# it against the local stack's Kafka jars.
#
# Why not the image's own start (/etc/kafka/docker/run): it formats the storage without SCRAM
# users, and a KRaft broker has no way to add the first one without a client that is already
# authenticated. So this formats with `--add-scram` itself, once, then runs the server.
#
# Environment:
#   KAFKA_*            broker properties, named as the image names them: KAFKA_LOG_DIRS is
#                      log.dirs ("_" is ".", "__" is "_", "___" is "-"); *_OPTS and KAFKA_HOME are
#                      the scripts' own. Required: KAFKA_LOG_DIRS, KAFKA_LISTENER_SECURITY_PROTOCOL_MAP.
#   CLUSTER_ID         the KRaft cluster id the storage is formatted with.
#   STREAMOPS_KAFKA_SASL_MECHANISM, STREAMOPS_KAFKA_SASL_USERNAME, STREAMOPS_KAFKA_SASL_PASSWORD
#                      the SCRAM user (the clients' own settings). Required when a listener of the
#                      protocol map is SASL_*: every such listener gets the mechanism and the JAAS
#                      line the broker logs in with to itself (inter-broker), as the same user.
#   PRIVATE_CONFIG_DIR
#                      a private folder (a memory-backed volume) for server.properties and
#                      client.properties (the health check's), which hold the password, and for
#                      the format's argument file, deleted after the format.
#
# The password is never on an argv (`ps` shows argvs to every user of the machine, the container's
# and the kubelet's): printf is a shell builtin, and StorageTool reads `@file` one argument a
# line. It must be 1-128 characters of [A-Za-z0-9._~@%+=/:-] (the chart's and compose's generated
# passwords are alphanumeric, Strimzi's too): the SCRAM argument is split at "," and the JAAS line
# and server.properties would need escapes for quotes and backslashes.
set -eu
umask 077

fail() {
    printf 'kafka-start: %s\n' "$1" >&2
    exit 1
}

KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
config_dir=${PRIVATE_CONFIG_DIR:?set PRIVATE_CONFIG_DIR (a private folder)}
: "${CLUSTER_ID:?set CLUSTER_ID (the KRaft cluster id)}"
: "${KAFKA_LOG_DIRS:?set KAFKA_LOG_DIRS}"
: "${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:?set KAFKA_LISTENER_SECURITY_PROTOCOL_MAP}"
case "$KAFKA_LOG_DIRS" in *,*) fail "KAFKA_LOG_DIRS: one folder only" ;; esac
mkdir -p "$config_dir" "$KAFKA_LOG_DIRS"
server_properties=$config_dir/server.properties
client_properties=$config_dir/client.properties
format_args=$config_dir/format.args
# The SCRAM user the storage was formatted with (mechanism and name, never the password).
scram_marker=$KAFKA_LOG_DIRS/streamops-scram-user

# --- the broker's properties from KAFKA_* ------------------------------------------------------
{
    echo "# Written by kafka-start.sh at every start; edits are lost."
    env | while IFS= read -r line; do
        name=${line%%=*}
        case "$name" in
            KAFKA_HOME | KAFKA_VERSION | KAFKA_JMX_HOSTNAME | KAFKA_LOG4J_* | KAFKA_TOOLS_* | KAFKA_*_OPTS) continue ;;
            KAFKA_[A-Z]*) ;;
            *) continue ;;
        esac
        key=$(echo "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/#/g' -e 's/_/./g' -e 's/#/_/g')
        printf '%s=%s\n' "$key" "${line#*=}"
    done | sort
} >"$server_properties"

# --- SASL/SCRAM for every SASL_* listener ------------------------------------------------------
sasl_listeners=""
for entry in $(echo "$KAFKA_LISTENER_SECURITY_PROTOCOL_MAP" | tr ',' ' '); do
    case "${entry#*:}" in
        SASL_PLAINTEXT | SASL_SSL) sasl_listeners="$sasl_listeners ${entry%%:*}" ;;
    esac
done
scram_user=none
: >"$client_properties"
if [ -n "$sasl_listeners" ]; then
    mechanism=${STREAMOPS_KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}
    username=${STREAMOPS_KAFKA_SASL_USERNAME:-}
    case "$mechanism" in
        SCRAM-SHA-256 | SCRAM-SHA-512) ;;
        *) fail "STREAMOPS_KAFKA_SASL_MECHANISM is $mechanism: SCRAM-SHA-256 or SCRAM-SHA-512" ;;
    esac
    case "$username" in
        "" | *[!A-Za-z0-9._-]*) fail "STREAMOPS_KAFKA_SASL_USERNAME: letters, digits, '.', '_', '-'" ;;
    esac
    case "${STREAMOPS_KAFKA_SASL_PASSWORD:-}" in
        "" | *[!A-Za-z0-9._~@%+=/:-]*)
            fail "STREAMOPS_KAFKA_SASL_PASSWORD is empty or not [A-Za-z0-9._~@%+=/:-]" ;;
    esac
    [ "${#STREAMOPS_KAFKA_SASL_PASSWORD}" -le 128 ] || fail "STREAMOPS_KAFKA_SASL_PASSWORD: at most 128 characters"
    jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$username\" password=\"$STREAMOPS_KAFKA_SASL_PASSWORD\";"
    lower_mechanism=$(echo "$mechanism" | tr 'A-Z' 'a-z')
    {
        printf 'sasl.enabled.mechanisms=%s\n' "$mechanism"
        printf 'sasl.mechanism.inter.broker.protocol=%s\n' "$mechanism"
        for listener in $sasl_listeners; do
            printf 'listener.name.%s.%s.sasl.jaas.config=%s\n' \
                "$(echo "$listener" | tr 'A-Z' 'a-z')" "$lower_mechanism" "$jaas"
        done
    } >>"$server_properties"
    protocol=$(echo "$KAFKA_LISTENER_SECURITY_PROTOCOL_MAP" | tr ',' '\n' | sed -n 's/^[^:]*:\(SASL_[A-Z]*\)$/\1/p' | head -n 1)
    printf 'security.protocol=%s\nsasl.mechanism=%s\nsasl.jaas.config=%s\n' \
        "$protocol" "$mechanism" "$jaas" >"$client_properties"
    scram_user="$mechanism $username"
fi

# --- the storage, formatted once ---------------------------------------------------------------
if [ -f "$KAFKA_LOG_DIRS/meta.properties" ]; then
    # SCRAM users are written when the storage is formatted: a broker formatted without this user
    # (an install from before SASL, or another username) would refuse every client.
    formatted=$(cat "$scram_marker" 2>/dev/null || echo none)
    if [ "$scram_user" != none ] && [ "$formatted" != "$scram_user" ]; then
        fail "the storage in $KAFKA_LOG_DIRS was formatted for the SCRAM user '$formatted', the settings ask for '$scram_user'. Start it with an empty data volume (docs/deploy.md, \"Kafka authentication\")."
    fi
else
    set -- format --cluster-id "$CLUSTER_ID" --config "$server_properties" --ignore-formatted
    if [ "$scram_user" != none ]; then
        printf '%s\n%s=[name=%s,password=%s]\n' \
            --add-scram "$mechanism" "$username" "$STREAMOPS_KAFKA_SASL_PASSWORD" >"$format_args"
        set -- "$@" "@$format_args"
    fi
    status=0
    # Its output lists the SCRAM user's salt and keys: not for the log.
    "$KAFKA_HOME/bin/kafka-storage.sh" "$@" >/dev/null || status=$?
    rm -f "$format_args"
    [ "$status" -eq 0 ] || fail "formatting the storage in $KAFKA_LOG_DIRS failed ($status)"
    echo "$scram_user" >"$scram_marker"
    echo "kafka-start: formatted $KAFKA_LOG_DIRS (cluster $CLUSTER_ID, SCRAM user: $scram_user)"
fi

exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$server_properties"
