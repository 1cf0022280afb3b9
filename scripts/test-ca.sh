#!/usr/bin/env bash
# Makes a throwaway certificate authority for tests, and a server
# certificate it signed for the sandbox's HTTPS listener:
#
#   scripts/test-ca.sh DIR
#
#   DIR/ca.pem        the CA certificate (what nginx's
#                     proxy_ssl_trusted_certificate points at)
#   DIR/server.pem    leaf certificate, SANs *.myshopify.com,
#                     myshopify.com, localhost, 127.0.0.1
#   DIR/server.key    its private key (unencrypted, mode 600)
#
# Idempotent: when the three files exist, are consistent and the leaf is
# valid for at least another day, nothing is done.  The CA's key is thrown
# away once the leaf is signed, so the CA can sign nothing else.  Nothing
# here is ever trusted outside a test: no system store is touched.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

dir=$1
mkdir -p "$dir"

ca="$dir/ca.pem"
crt="$dir/server.pem"
key="$dir/server.key"

if [ -s "$ca" ] && [ -s "$crt" ] && [ -s "$key" ] \
    && openssl verify -CAfile "$ca" "$crt" >/dev/null 2>&1 \
    && openssl x509 -in "$crt" -noout -checkend 86400 >/dev/null 2>&1 \
    && [ "$(openssl x509 -in "$crt" -noout -pubkey)" \
         = "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]
then
    exit 0
fi

work=$(mktemp -d "$dir/.ca.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

# P-256 keys: fast to make, accepted by nginx, python and openssl alike
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 30 \
    -subj "/CN=shopify-bc test CA (throwaway)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$work/server.key" -out "$work/server.csr" \
    -subj "/CN=*.myshopify.com" 2>/dev/null

cat > "$work/ext.cnf" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:*.myshopify.com,DNS:myshopify.com,DNS:localhost,IP:127.0.0.1
EOF

openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" \
    -CAkey "$work/ca.key" -CAcreateserial -days 30 \
    -extfile "$work/ext.cnf" -out "$work/server.pem" 2>/dev/null

chmod 644 "$work/ca.pem" "$work/server.pem"
chmod 600 "$work/server.key"
mv -f "$work/server.key" "$key"
mv -f "$work/server.pem" "$crt"
mv -f "$work/ca.pem" "$ca"
