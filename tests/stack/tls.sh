# shellcheck shell=bash
# Test certificates and credentials for the secured services (TLS + ACL Redis, Kafka's
# SASL_SSL listener, the HTTPS registry proxy). Source it after lib.sh, do not run it.
#
#   ensure_tls        a CA, a server certificate for 127.0.0.1/localhost and a client
#                     certificate, generated once with openssl into $STACK_TLS:
#                     ca.pem ca.key server.pem server.key client.pem client.key
#                     kafka-server.pem (PKCS#8 key + certificate, Kafka's PEM keystore)
#   stack_secret NAME a random password, generated once into $STACK_TLS/NAME.secret
#
# Everything is test material, kept in the state directory and handed to the tests through
# the env file (REDIS_SECURE_*, KAFKA_SASL_*, SCHEMA_REGISTRY_AUTH_*).

STACK_TLS="$STACK_STATE/tls"

ensure_tls() {
    [[ -s $STACK_TLS/.complete ]] && return 0
    command -v openssl >/dev/null || apt_install openssl
    (
        flock -w 60 9 || die "could not lock $STACK_TLS"
        [[ -s $STACK_TLS/.complete ]] && exit 0
        local dir
        dir="$(mktemp -d "$STACK_STATE/.tls.XXXXXX")"
        cd "$dir" || exit 1
        {
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=agent-context test CA" \
                -keyout ca.key -out ca.pem
            openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile server.ext -out server.pem
            openssl req -newkey rsa:2048 -nodes -subj "/CN=agent-context test client" -keyout client.key -out client.csr
            printf 'extendedKeyUsage=clientAuth\n' >client.ext
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile client.ext -out client.pem
            openssl pkcs8 -topk8 -nocrypt -in server.key -out server.pk8
            cat server.pk8 server.pem >kafka-server.pem
        } >openssl.log 2>&1 || die "openssl failed: $(tail -n 20 openssl.log)"
        rm -f ./*.csr ./*.ext ./*.srl server.pk8
        chmod 600 ./*.key kafka-server.pem
        date -u +%FT%TZ >.complete
        rm -rf "$STACK_TLS"
        mv "$dir" "$STACK_TLS"
    ) 9>"$STACK_RUN/locks/tls"
    [[ -s $STACK_TLS/.complete ]] || die "no test certificates in $STACK_TLS"
    log "test certificates in $STACK_TLS"
}

# stack_secret NAME: print the password NAME, creating it on first use.
stack_secret() {
    local file="$STACK_TLS/$1.secret"
    ensure_tls
    if [[ ! -s $file ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$file.tmp" && mv -f "$file.tmp" "$file")
    fi
    cat "$file"
}
